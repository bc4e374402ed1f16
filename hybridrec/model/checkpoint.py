"""Training checkpoints: one safetensors file per run, replaced atomically after every epoch, so a killed
`fit --resume` continues where it stopped. Tensors in the file, the rest as JSON in its metadata; no pickles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hybridrec.errors import ModelFileError
from hybridrec.safeio import disk_error

LOG = logging.getLogger("hybridrec.train")  # a warning reaches stderr even where no logging is set up


class Checkpointer:
    """Saves and restores model, optimizer, best weights, RNG states and early-stopping bookkeeping."""

    def __init__(self, path: str | Path, fingerprint: str, parts: dict[str, str] | None = None, resume: bool = False):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.parts = parts or {}  # fingerprints of the run's parts ({"config": ..., "data": ...}), to say what changed
        self.resume = resume  # asked to resume: a fresh start is worth a notice

    def save(self, net, opt, best_state, rng: np.random.Generator, epoch: int, extra: dict) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        if best_state is not None:
            tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
        opt_state = opt.state_dict()
        for idx, state in opt_state["state"].items():
            for name, value in state.items():
                tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout and negatives drawn on the GPU
            tensors.update({f"cuda_rng.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
        meta = {
            "fingerprint": self.fingerprint,
            "parts": self.parts,
            "epoch": epoch,
            "param_groups": opt_state["param_groups"],
            "numpy_rng": rng.bit_generator.state,
            "has_best": best_state is not None,
            **extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            save_file(tensors, str(tmp), metadata={"hybridrec": json.dumps(meta, default=_json_default)})
            os.replace(tmp, self.path)
        except (SafetensorError, OSError) as exc:  # a full disk or `ulimit -f`: one line, no partial file left
            tmp.unlink(missing_ok=True)
            raise disk_error(exc, self.path) from None

    def load(self, net, opt, rng: np.random.Generator) -> dict | None:
        """Restore into net/opt/rng and return the metadata (with best_state), or None if there is no checkpoint
        for this exact run (different config or data)."""
        if not self.path.is_file():
            if self.resume:
                LOG.warning(f"--resume: no checkpoint at {self.path}; starting at epoch 1")
            return None
        try:
            tensors = load_file(str(self.path))
            with open(self.path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(header_len))
            meta = json.loads(header["__metadata__"]["hybridrec"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"{self.path}: unreadable checkpoint ({exc}); delete it to start over") from None
        if meta.get("fingerprint") != self.fingerprint:
            if self.resume:
                LOG.warning(
                    f"--resume: the checkpoint {self.path} is not this run's ({self._changed(meta)}); starting"
                    " over at epoch 1"
                )
            return None
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        try:
            opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        except (ValueError, KeyError, TypeError) as exc:  # e.g. an older hybridrec's one Adam for all weights
            raise ModelFileError(f"{self.path}: {exc}; delete it to start over") from None
        torch.set_rng_state(tensors["torch_rng"])
        cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda_rng."))
        if cuda and torch.cuda.is_available():  # a checkpoint of a CPU run has none: its CUDA generators stay seeded
            torch.cuda.set_rng_state_all([state for _, state in cuda[: torch.cuda.device_count()]])
        rng.bit_generator.state = meta["numpy_rng"]
        meta["best_state"] = (
            {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
        )
        return meta

    def _changed(self, meta: dict) -> str:
        """What differs between this run and the checkpoint's: "the config changed", "the training data changed"."""
        theirs = meta.get("parts")
        if not isinstance(theirs, dict) or not self.parts:
            return "written for another config or training data"
        names = {"config": "the config", "data": "the training data"}
        changed = [names.get(k, k) for k, v in self.parts.items() if theirs.get(k) != v]
        return (" and ".join(changed) + " changed") if changed else "written by another run"

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def run_parts(settings: dict, arrays: tuple[np.ndarray, ...]) -> dict[str, str]:
    """The fingerprints of a run's config and of its training rows apart, so `--resume` can say which changed."""
    return {"config": run_fingerprint(settings, ()), "data": run_fingerprint({}, arrays)}


def run_fingerprint(settings: dict, arrays: tuple[np.ndarray, ...]) -> str:
    """Identifies one training run (the model's settings + the exact training rows): a checkpoint only resumes
    the same run."""
    import hashlib

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
