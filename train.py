"""Train or evaluate a prompt-learning trainer (the Dassl/CoOp command line).

Single process:  python train.py --root DATA --trainer CoOp --dataset-config-file ... --output-dir OUT
Several:         torchrun --nproc_per_node N train.py ...   (DDP: gloo on CPU, nccl on GPU)
Re-running the same command resumes from OUTPUT_DIR; KEY VALUE pairs override the config (flags may
come before or after them). A user error (bad key or value, missing data or weights, a refused
resume) is printed in one or two lines; --debug (or GOPRO_DEBUG=1) shows its traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from dassl import command_line
from dassl.command_line import DEBUG_ENV, REPO, foreign_key_warnings, resolve_repo_paths  # noqa: F401

# torch, torchvision and open_clip take seconds to import: they are imported inside the functions
# that need them, so --help and argument errors answer at once.

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    return command_line.build_parser(__doc__)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags and KEY VALUE pairs in any order (``... OPTIM.LR 0.01 --eval-only`` works)."""
    return command_line.parse_args(argv, build_parser())


def setup_cfg(args: argparse.Namespace):
    """The run's config, with every dataset loader's and trainer's config keys registered."""
    import datasets  # noqa: F401  (registers every dataset loader and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)

    return command_line.setup_cfg(args)


def main(argv: list[str] | None = None) -> None:
    """Parse, then hand the run to the engine. Errors propagate (``cli`` turns user errors into one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_usage(sys.stderr)
        print("train.py: no arguments; see --help (nothing was written)", file=sys.stderr)
        raise SystemExit(2)
    args = parse_args(argv)
    cfg = setup_cfg(args)
    from dassl.engine.launch import run

    run(args, cfg, foreign_key_warnings(args, cfg.TRAINER.NAME))


# The packages' user-error bases (module, class): dassl's, and clip's for weights that cannot be loaded
# (clip/ knows nothing of dassl, so its errors have their own base).
USER_ERROR_BASES = (("dassl.utils.errors", "UserError"), ("clip.errors", "BackboneLoadError"))


def _is_user_error(err: BaseException) -> bool:
    # Looked up, not imported: a module that was never imported raised nothing, and when importing it
    # failed, that error is no user error.
    bases = [getattr(sys.modules[module], name) for module, name in USER_ERROR_BASES if module in sys.modules]
    return isinstance(err, (FileNotFoundError, *bases))


def _one_message(err: BaseException) -> str:
    """The error's own message; an error re-raised from a DataLoader worker carries the worker's traceback."""
    text = str(err).strip() or type(err).__name__
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join([text, *getattr(err, "__notes__", [])])


def cli(argv: list[str] | None = None) -> int:
    """``main`` for a shell: a user error is one ``error:`` line and exit code 1, a bug keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted; checkpoints are written atomically, so the same command resumes", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not _is_user_error(err):
            raise
        from dassl.engine.distributed import user_error_prefix

        message = f"error: {user_error_prefix()}{_one_message(err)}"  # under torchrun, rank 0 alone prints it
        print(message, file=sys.stderr)
        print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        logger_module = sys.modules.get("dassl.utils.logger")
        if logger_module is not None:
            logger_module.write_to_log_file(message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
