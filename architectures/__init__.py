"""The ZePT network on nnU-Net's planned U-Net."""
