"""Checkpoint files and small model helpers (Dassl's ``dassl.utils.torchtools``).

Every file is written atomically: a temp file in the same folder, fsync, then ``os.replace``,
so a run killed while saving leaves the previous file intact, never a torn one. Every checkpoint
is verified when it is loaded: a torch archive is a zip whose entries each carry a CRC-32 of their
bytes, which ``torch.load`` never checks; ``load_checkpoint`` does, so a flipped bit is refused.
"""
from __future__ import annotations

import errno
import logging
import os
import os.path as osp
import re
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, CheckpointMismatchError, CorruptCheckpointError, DiskFullError
from .tools import mkdir_if_missing

__all__ = [
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_write_bytes",
    "remove_stale_temp_files",
    "save_checkpoint",
    "load_checkpoint",
    "verify_checkpoint",
    "read_checkpoint_pointer",
    "intact_checkpoints",
    "resume_from_checkpoint",
    "load_pretrained_weights",
    "load_state_dict_checked",
    "count_num_param",
    "open_all_layers",
    "open_specified_layers",
    "init_network_weights",
]

logger = logging.getLogger(__name__)


# Hidden temp files of _atomic_write: ".<name>.<8 characters from mkstemp>.tmp".
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
ZIP_MAGIC = b"PK\x03\x04"  # a torch archive (torch >= 1.6) is a zip file
POINTER_FILE = "checkpoint"  # <model folder>/checkpoint names the latest file saved there
_unverified_noted: set[str] = set()  # legacy files already reported as loaded unverified


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_disk_full(err: BaseException) -> bool:
    # torch's own file writer reports a failed write as a RuntimeError without errno.
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL_ERRNOS
    return isinstance(err, RuntimeError) and "file write failed" in str(err)


def _atomic_write(path: str, write_fn) -> None:
    """Run ``write_fn(fileobj)`` on a temp file next to ``path``, fsync it, then rename over ``path``.

    The file gets the permissions a plain ``open`` would give (0666 minus the umask), not mkstemp's 0600.
    A full disk raises DiskFullError naming ``path``; the file already at ``path`` is left as it was.
    """
    folder = osp.dirname(osp.abspath(path))
    mkdir_if_missing(folder)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{osp.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as err:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        if _is_disk_full(err):
            kept = f'"{path}" is unchanged' if osp.exists(path) else "no file was replaced"
            raise DiskFullError(f'No space left on device while writing "{path}"; {kept}') from err
        raise
    # Make the rename itself durable (POSIX); some filesystems refuse to open a folder.
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(folder: str, depth: int = 1) -> list[str]:
    """Delete the temp files of interrupted atomic writes in ``folder`` (and ``depth`` levels below).

    Call it only while no other process writes there (e.g. holding the folder's ``FolderLock``):
    then every such file belongs to a writer that died. Returns the removed paths.
    """
    removed = []
    if not osp.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and _TEMP_FILE.match(entry.name):
            os.remove(entry.path)
            removed.append(entry.path)
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            removed.extend(remove_stale_temp_files(entry.path, depth - 1))
    return removed


def _save_options():
    """torch's save options (torch >= 2.5), where checksums can be turned off; None in older versions."""
    try:
        from torch.utils.serialization import config
    except ImportError:
        return None
    return getattr(config, "save", None)


def _save_with_checksums(obj: Any, fileobj) -> None:
    """``torch.save`` with the CRC-32 of every archive entry written, even when torch was told to skip them."""
    options = _save_options()
    if options is None or getattr(options, "compute_crc32", True):
        torch.save(obj, fileobj)
        return
    options.compute_crc32 = True
    try:
        torch.save(obj, fileobj)
    finally:
        options.compute_crc32 = False


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a partly written file at ``path``; ``load_checkpoint`` verifies it."""
    _atomic_write(path, partial(_save_with_checksums, obj))


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    _atomic_write(path, lambda f: f.write(data))


def _strip_module_prefix(state_dict: dict) -> OrderedDict:
    """Drop the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(
    state: dict,
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> str:
    """Save ``state`` to ``save_dir/<model_name or model.pth.tar-EPOCH>`` and record it in ``checkpoint``.

    Returns the path written. With ``is_best`` the file is also saved as ``model-best.pth.tar``.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys and "state_dict" in state:
        state = dict(state, state_dict=_strip_module_prefix(state["state_dict"]))
    fname = model_name or f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, fname)
    atomic_torch_save(state, fpath)
    logger.info(f"Checkpoint saved to {fpath}")
    # `checkpoint` names the file just written; resume_from_checkpoint reads it.
    atomic_write_text(osp.join(save_dir, POINTER_FILE), f"{osp.basename(fpath)}\n")
    if is_best:
        atomic_torch_save(state, osp.join(save_dir, "model-best.pth.tar"))
    return fpath


def verify_checkpoint(fpath: str) -> bool:
    """Check every entry of the archive at ``fpath`` against the CRC-32 written with it.

    True: verified. False: the file carries no checksums (a legacy pickle of torch < 1.6, or an
    archive written with checksums off), so it cannot be checked. A mismatch, or an archive that
    cannot be opened, raises CorruptCheckpointError naming the file.
    """
    with open(fpath, "rb") as f:
        starts_as_archive = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    if not starts_as_archive and not zipfile.is_zipfile(fpath):
        return False
    try:
        if not starts_as_archive:
            raise zipfile.BadZipFile("its first bytes are not a zip header")
        with zipfile.ZipFile(fpath) as archive:
            entries = [info for info in archive.infolist() if info.file_size]
            if entries and all(info.CRC == 0 for info in entries):
                return False
            bad_entry = archive.testzip()
    except Exception as err:  # noqa: BLE001 - any failure to read the archive's structure means damage
        raise CorruptCheckpointError(f'Checkpoint "{fpath}" is damaged: its archive cannot be read ({err})') from err
    if bad_entry is not None:
        raise CorruptCheckpointError(
            f'Checkpoint "{fpath}" is corrupted: its entry "{bad_entry}" does not match the checksum written with it'
        )
    return True


def load_checkpoint(fpath: str) -> dict:
    """Load a checkpoint saved by ``save_checkpoint`` (or upstream Dassl) onto the CPU or CUDA, verified first.

    A file that changed since it was written raises CorruptCheckpointError; one torch cannot read raises
    CheckpointError; both name the file. A legacy file without checksums loads, with one note.
    """
    if fpath is None:
        raise ValueError("File path is None")
    fpath = osp.abspath(osp.expanduser(fpath))
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    if not verify_checkpoint(fpath) and fpath not in _unverified_noted:
        _unverified_noted.add(fpath)
        logger.info(f'Note: "{fpath}" carries no checksums (an older torch format), so it is loaded unverified')
    map_location = None if torch.cuda.is_available() else "cpu"
    # The files hold pickled python objects (scheduler state, numbers), so weights_only must be off;
    # only load checkpoints you trust.
    try:
        return torch.load(fpath, map_location=map_location, weights_only=False)
    except UnicodeDecodeError:
        # Checkpoints written by python 2 need latin1 to unpickle.
        return torch.load(fpath, map_location=map_location, weights_only=False, encoding="latin1")
    except Exception as e:
        raise CheckpointError(f'Cannot load checkpoint "{fpath}": {e}') from e


def read_checkpoint_pointer(fdir: str) -> str:
    """The file name written in ``fdir/checkpoint`` (the latest file saved there); an empty one is refused."""
    pointer = osp.join(fdir, POINTER_FILE)
    with open(pointer) as f:
        fname = f.readline().strip()
    if not fname or osp.basename(fname) != fname:
        raise CheckpointError(
            f'Checkpoint pointer "{pointer}" holds {fname!r}, not a file name; training writes the name of the '
            'latest file saved beside it there (e.g. "model.pth.tar-10"). Write that name into it (to evaluate, '
            "--load-epoch N picks a file instead)"
        )
    return fname


def intact_checkpoints(folder: str, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the checkpoint files in ``folder`` (model.pth.tar-N by epoch, then model-best) that verify."""
    if not osp.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if n not in set(exclude) and not n.startswith(".")]
    epochs = sorted(
        (n for n in names if re.fullmatch(r"model\.pth\.tar-\d+", n)), key=lambda n: int(n.rsplit("-", 1)[1])
    )
    intact = []
    for name in epochs + [n for n in names if n == "model-best.pth.tar"]:
        try:
            verify_checkpoint(osp.join(folder, name))
        except (CorruptCheckpointError, OSError):
            continue
        intact.append(name)
    return intact


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None) -> int:
    """Load the file named in ``fdir/checkpoint`` into model/optimizer/scheduler; return its epoch."""
    fpath = osp.join(fdir, read_checkpoint_pointer(fdir))
    logger.info(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointMismatchError(f'Checkpoint "{fpath}" does not fit the model: {err}') from err
    logger.info("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        logger.info("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        logger.info("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    logger.info(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_state_dict_checked(
    model: nn.Module,
    state_dict: dict,
    source: str,
    ignore_suffixes: Iterable[str] = (),
    allow_unexpected: bool = False,
) -> None:
    """Load ``state_dict`` into ``model``, strict about learned keys; errors name ``source`` and the keys.

    Keys ending in one of ``ignore_suffixes`` (e.g. class-name buffers ``token_prefix``) are
    dropped from both sides, so a model can be evaluated on another class set. Learned weights the
    model lacks are refused too (a checkpoint of another trainer or model setting), unless
    ``allow_unexpected``: then they are left out with a warning.
    """
    ignore = tuple(ignore_suffixes)

    def kept(keys):
        return {k for k in keys if not (ignore and k.endswith(ignore))}

    state_dict = _strip_module_prefix(state_dict)
    own = model.state_dict()
    missing = sorted(kept(own) - kept(state_dict))
    if missing:
        raise CheckpointMismatchError(
            f'Checkpoint "{source}" lacks learned weights {missing} (it holds {sorted(state_dict)})'
        )
    unexpected = sorted(kept(state_dict) - kept(own))
    if unexpected and not allow_unexpected:
        raise CheckpointMismatchError(
            f'Checkpoint "{source}" holds learned weights the model does not have: {unexpected}; it was trained '
            "with another trainer or another setting of a key that shapes the model"
        )
    if unexpected:
        logger.warning(f'WARNING: leaving out weights of "{source}" that the model does not have: {unexpected}')
    loadable = {k: v for k, v in state_dict.items() if k in kept(own)}
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in loadable.items()
        if hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong_shape:
        raise CheckpointMismatchError(f'Checkpoint "{source}" does not fit the model: {"; ".join(wrong_shape)}')
    model.load_state_dict(loadable, strict=False)


def load_pretrained_weights(model: nn.Module, weight_path: str) -> None:
    """Copy every weight of ``weight_path`` whose name and shape match ``model``; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = _strip_module_prefix(state_dict)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        logger.warning(
            f'Cannot load "{weight_path}" (check the key names manually): no key matched the model'
        )
        return
    logger.info(f'Successfully loaded pretrained weights from "{weight_path}"')
    if discarded:
        logger.info(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model: nn.Module | None = None, params: Iterable[torch.Tensor] | None = None) -> int:
    """Total number of elements in ``model``'s parameters, or in ``params``."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("count_num_param needs a model or params")


def open_all_layers(model: nn.Module) -> None:
    """Put ``model`` in train mode with every parameter trainable."""
    model.train()
    for p in model.parameters():
        p.requires_grad = True


def open_specified_layers(model: nn.Module, open_layers: str | list[str]) -> None:
    """Train only the named direct children of ``model``; freeze (and eval) the others."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    if isinstance(open_layers, str):
        open_layers = [open_layers]
    children = dict(model.named_children())
    unknown = [name for name in open_layers if name not in children]
    if unknown:
        raise ValueError(f"{unknown} are not direct children of the model; children: {sorted(children)}")
    for name, module in children.items():
        is_open = name in open_layers
        module.train(is_open)
        for p in module.parameters():
            p.requires_grad = is_open


def init_network_weights(model: nn.Module, init_type: str = "normal", gain: float = 0.02) -> None:
    """Initialise conv/linear weights (normal, xavier, kaiming or orthogonal) and norm layers."""
    initialisers = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain),
    }
    if init_type not in initialisers:
        raise ValueError(f'init_type "{init_type}" is not one of {sorted(initialisers)}')

    def init_one(m: nn.Module) -> None:
        name = type(m).__name__
        has_weight = getattr(m, "weight", None) is not None
        if has_weight and ("Conv" in name or "Linear" in name):
            initialisers[init_type](m.weight.data)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif "BatchNorm" in name or "InstanceNorm" in name:
            if has_weight:
                nn.init.constant_(m.weight.data, 1.0)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)

    model.apply(init_one)
