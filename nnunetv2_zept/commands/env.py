HELP = "print the shell line that registers the ZePT trainers with nnU-Net (fallback for python -S)"


def add_arguments(parser):
    pass


def run(args):
    from nnunetv2_zept._register import export_line

    print(export_line())
    return 0
