"""python -m bench.limits: the machine's measured limits (the matrix-product rate per dtype, the copy bandwidth and,
on CUDA, the kernel-launch floor: bench.core.limits) as one JSON object on stdout, progress on stderr.

    python -m bench.limits                                # float32 on CPU; float32, bfloat16, float16 on CUDA
    python -m bench.limits --device cuda --dtype bfloat16 > limits.json
    python -m bench.limits --check limits.json            # a limits file checked as --limits FILE reads it

At most 15 s on a CPU and 20 s on CUDA, in torch's threads (all cores by default, or --threads). Bad input, or a
malformed file given to --check, is one line on stderr and exit code 2.
"""

import json
import sys

import torch

from bench.core import cli
from bench.core.config import DEVICES
from bench.core.limits import measure, read
from bench.usage import Parser, UsageError, fail, one_of, positive_int, value_of


def make_parser():
    p = Parser(prog="python -m bench.limits", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device",
        default="auto",
        type=value_of(one_of(DEVICES, "device"), "device"),
        help="cpu, cuda or auto (default)",
    )
    p.add_argument(
        "--dtype",
        type=cli.FLAGS["--dtype"][1],  # the suites' --dtype: the same names, float16 on CUDA only
        help="the products' dtypes: float32, bfloat16, float16 (CUDA) (default: float32 on CPU, all three on CUDA)",
    )
    p.add_argument(
        "--threads", type=value_of(positive_int, "threads"), help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--check", metavar="FILE", help="check a limits file and print it; measure nothing")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = make_parser().parse_args(argv)
        if args.check:
            print(json.dumps(read(args.check, args.dtype or ()), indent=2))
            return 0
        device = cli.device_for(args.device, args.dtype)
    except UsageError as error:
        return fail(error)
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = measure(device, args.dtype, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(limits, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
