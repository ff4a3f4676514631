"""Does a CPU memory format or oneDNN setting make the backward pass cheaper?

The step profile (docs/benchmarks.md) puts most of a CPU training step into the backward pass.
This times forward and backward of nnU-Net's plain 3D U-Net at the demo's scale (width 16, 5
stages, batch 2, patch 64 x 48 x 32, deep supervision, 2 threads) in three settings, one after the
other in one process each:

  default           what nnU-Net does on CPU (NCDHW tensors, oneDNN on)
  channels_last_3d  network and input in torch.channels_last_3d (NDHWC)
  no_onednn         torch.backends.mkldnn.enabled = False (PyTorch's own kernels)

    python benchmarks/conv_memory_format.py            # all three, 4 timed steps each after 2 warm-up steps
"""
import argparse
import subprocess
import sys
import time

MODES = ("default", "channels_last_3d", "no_onednn")


def run(mode: str, steps: int) -> None:
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = PlainConvUNet(1, 5, (16, 32, 64, 128, 256), torch.nn.Conv3d, 3, (1, 2, 2, 2, 2), (2, 2, 2, 2, 2), 9,
                        (2, 2, 2, 2), False, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                        torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    x = torch.randn(2, 1, 64, 48, 32)
    if mode == "channels_last_3d":
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    if mode == "no_onednn":
        torch.backends.mkldnn.enabled = False
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    fwd, bwd = [], []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = net(x)
        t1 = time.perf_counter()
        sum(o.float().mean() for o in out).backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    print(f"| {mode} | {min(fwd):.3f}-{max(fwd):.3f} | {min(bwd):.3f}-{max(bwd):.3f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default=None, help="one setting only (default: all, each in its own process)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    if args.mode:
        run(args.mode, args.steps)
        return 0
    print("| setting | forward s | backward s |\n|---|---|---|", flush=True)
    for mode in MODES:
        subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
