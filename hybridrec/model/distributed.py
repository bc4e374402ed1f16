"""Training on several processes with torch.distributed (`torchrun`, or `hybridrec fit --nproc N`, which calls it).

Every rank reads the data, splits it and builds the features the same way; the text encoding is shared out by rank
into the common text cache (rank r encodes texts r::world, then all ranks read the cache). Training starts from rank
0's weights on every rank; each global batch of `train.batch_size` rows is split across the ranks (rank r takes rows
r::world), so a fit on N ranks makes the same optimiser steps on the same batch size as a fit on one. After each
backward pass the gradients are averaged explicitly: dense ones with one all_reduce over a flat buffer, the sparse
gradients of the embedding tables by gathering every rank's (row, value) pairs into one sparse gradient. Every rank
then applies the same update, so the weights stay identical (checked once, by checksum, at the end of training).
Per-epoch validation, checkpoints, evaluation and the saved model are rank 0's; the other ranks leave after
training (`WorkerDone`).

Backends: gloo on CPU, NCCL for CUDA tensors (the group is made with `cpu:gloo,cuda:nccl` where CUDA is present).
Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op and a fit runs as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from hybridrec.errors import TrainingError

# A rank waits this long in a collective (rank 0 alone validating, or the others waiting for the text encoding of a
# big catalogue) before the group gives up; HYBRIDREC_DIST_TIMEOUT (seconds) changes it.
DEFAULT_TIMEOUT_SECONDS = 6 * 3600
LAUNCH_MODULE = "hybridrec_cli.main"  # what `fit --nproc` runs under torchrun: the CLI itself


class WorkerDone(Exception):
    """Raised on ranks other than 0 once training is over: the fitted model, its evaluation and its files are rank
    0's. The CLI ends such a rank quietly with exit code 0."""


def launched() -> bool:
    """Whether this process was started by torchrun as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of several ranks is set up (by `setup`)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that validates, checkpoints, evaluates and saves."""
    return rank() == 0


def own_gpu() -> bool:
    """Whether this process can train on a GPU of its own: CUDA is present and, under torchrun, this node runs no
    more ranks than it has GPUs (NCCL refuses two ranks on one GPU: "Duplicate GPU detected")."""
    if not torch.cuda.is_available():
        return False
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched() else 1
    return local_ranks <= torch.cuda.device_count()


def setup() -> bool:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
    False (and nothing done) for a single process. A CUDA rank trains on the GPU of its LOCAL_RANK; with more ranks
    on a node than GPUs, the ranks train on the CPU (gloo), as `train.device=auto` then chooses."""
    if not launched() or active():
        return active()
    cuda = own_gpu()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = timedelta(seconds=float(os.environ.get("HYBRIDREC_DIST_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    return True


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process() -> None:
    """End this rank now, its work done and the group torn down: flush the output, then skip the interpreter's
    teardown, where gloo's threads (torch 2.13) can abort the process ("terminate called without an active
    exception", about one exit in 40 on this machine) after a clean destroy_process_group, making a finished fit
    look failed to torchrun."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def barrier() -> None:
    if active():
        dist.barrier()


# ------------------------------------------------------------------------------------------------- features
def share_text_encoding(pipeline) -> None:
    """Make `pipeline.encode_texts` encode this rank's share of each text list (texts r::world) into the common
    text cache first, wait for every rank, then read the whole list, now cached: the encoding is split N ways and
    every rank ends with the same vectors (read from the same cache). Needs `features.cache_dir` on storage every
    rank reads (one node: always); a rank that cannot see another's entries encodes them itself. No-op on one rank.
    """
    if not active():
        return
    encode = pipeline.encode_texts
    _sharing["open"] = True

    def shared(texts: list[str], label: str = "", reviews: bool = False):
        if not _sharing["open"]:  # training is over (the other ranks may be gone): no barrier to wait at
            return encode(texts, label, reviews)
        unique = list(dict.fromkeys(texts))
        encode(unique[rank() :: world_size()], label if is_main() else "", reviews)
        barrier()
        return encode(texts, "", reviews)

    pipeline.encode_texts = shared


_sharing = {"open": False}  # share_text_encoding's barriers are on until finish_training


# ------------------------------------------------------------------------------------------------- training
class Ranks:
    """The trainer's view of the process group: batch shares, gradient averaging, rank-0 values and checks. On one
    process every method is the identity or a no-op, so `Trainer.fit` reads the same either way."""

    def __init__(self, net: nn.Module, seed: int):
        self.net, self.seed = net, seed
        self.world, self.rank = world_size(), rank()
        sparse = {
            id(m.weight) for m in net.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and bool(m.sparse)
        }
        params = [p for p in net.parameters() if p.requires_grad]
        self.dense = [p for p in params if id(p) not in sparse]
        self.sparse = [p for p in params if id(p) in sparse]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, first_epoch: int) -> None:
        """Every rank starts from rank 0's weights and buffers (a rank that never loaded the text model drew other
        random numbers before the network was made), and from the same epoch: a checkpoint that only some ranks
        could read (--out not on storage every node sees) is an error, not a silent split."""
        if self.world == 1:
            return
        with torch.no_grad():
            for tensor in self.net.state_dict().values():
                dist.broadcast(tensor, 0)
        epochs = self.gather(float(first_epoch))
        if len(set(epochs)) > 1:
            raise TrainingError(
                f"the ranks would resume from different epochs ({', '.join(str(int(e) - 1) for e in epochs)}): "
                "put --out (its .checkpoints folder) on storage every node reads"
            )

    def seed_epoch(self, epoch: int) -> None:
        """A torch seed per (run seed, epoch, rank) for the epoch's negatives and dropout masks: ranks draw
        different samples (the same stream on every rank would repeat each rank's negatives on the others), and a
        resumed run draws what the uninterrupted one drew. One process keeps its single seeded stream."""
        if self.world > 1:
            digest = hashlib.sha256(struct.pack("<qqq", self.seed, epoch, self.rank)).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def share(self, batch: torch.Tensor) -> torch.Tensor | None:
        """This rank's rows of a global batch (rows rank::world); None when the batch has fewer rows than there
        are ranks (the last batch of an epoch at most: every rank skips it, so none waits for the others)."""
        if self.world == 1:
            return batch
        if len(batch) < self.world:
            return None
        return batch[self.rank :: self.world]

    def average_gradients(self) -> None:
        """Replace every gradient with its mean over the ranks, so every rank steps the same. A parameter no rank
        touched keeps no gradient (its optimiser skips it, as on one process)."""
        if self.world == 1:
            return
        self._average_dense()
        self._average_sparse()

    def _average_dense(self) -> None:
        if not self.dense:
            return
        device = self.dense[0].device
        parts = [
            p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device) for p in self.dense
        ]
        touched = torch.tensor([float(p.grad is not None) for p in self.dense], device=device)
        flat = torch.cat([*parts, touched])
        dist.all_reduce(flat)
        offset = 0
        for p, had in zip(self.dense, flat[-len(self.dense) :].tolist()):
            n = p.numel()
            p.grad = (flat[offset : offset + n] / self.world).view_as(p).clone() if had > 0 else None
            offset += n

    def _average_sparse(self) -> None:
        if not self.sparse:
            return
        grads = []
        for p in self.sparse:
            g = p.grad.coalesce() if p.grad is not None else None
            grads.append(g)
        counts = torch.tensor([0 if g is None else g.indices().shape[1] for g in grads], dtype=torch.long)
        everyone = [torch.zeros_like(counts) for _ in range(self.world)]
        dist.all_gather(everyone, counts)  # CPU tensor: gloo, whatever the training device
        sizes = torch.stack(everyone)  # (world, tables)
        for t, (p, g) in enumerate(zip(self.sparse, grads)):
            n = sizes[:, t].tolist()
            if max(n) == 0:
                p.grad = None
                continue
            width, top = p.shape[1], max(n)
            idx = torch.zeros(top, dtype=torch.long, device=p.device)
            val = torch.zeros(top, width, dtype=p.dtype, device=p.device)
            if g is not None and n[self.rank]:
                idx[: n[self.rank]] = g.indices()[0]
                val[: n[self.rank]] = g.values()
            all_idx = [torch.empty_like(idx) for _ in range(self.world)]
            all_val = [torch.empty_like(val) for _ in range(self.world)]
            dist.all_gather(all_idx, idx)
            dist.all_gather(all_val, val)
            rows = torch.cat([i[:k] for i, k in zip(all_idx, n)]).unsqueeze(0)
            values = torch.cat([v[:k] for v, k in zip(all_val, n)]) / self.world
            p.grad = torch.sparse_coo_tensor(rows, values, p.shape).coalesce()

    def total(self, value: float) -> float:
        """The sum of `value` over the ranks (each rank's share of the epoch's loss)."""
        return float(sum(self.gather(value))) if self.world > 1 else value

    def gather(self, value: float) -> list[float]:
        """`value` from every rank, in rank order (CPU float64: gloo whatever the training device)."""
        if self.world == 1:
            return [value]
        mine = torch.tensor([value], dtype=torch.float64)
        out = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine)
        return [float(t) for t in out]

    def main_value(self, fn: Callable[..., float], *args: object) -> float:
        """`fn(*args)` computed on rank 0 only and sent to every rank (the validation score: early stopping must
        decide the same everywhere)."""
        if self.world == 1:
            return fn(*args)
        value = torch.tensor([fn(*args) if self.is_main else 0.0], dtype=torch.float64)
        dist.broadcast(value, 0)
        return float(value)


def checksum(net: nn.Module) -> float:
    """A float64 fingerprint of every weight and buffer: equal on every rank when they stepped the same."""
    total = 0.0
    with torch.no_grad():
        for i, tensor in enumerate(net.state_dict().values()):
            if tensor.is_floating_point():
                total += float(tensor.double().sum()) * (1 + (i % 7)) + float(tensor.double().abs().sum())
    return total


def finish_training(net: nn.Module) -> None:
    """After training: check every rank holds the same weights (a TrainingError if not), then end the ranks other
    than 0 (`WorkerDone`); rank 0 goes on to the vectors, the index, the evaluation and the files."""
    if not active():
        return
    _sharing["open"] = False
    sums = Ranks(net, 0).gather(checksum(net))
    if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
        raise TrainingError(f"the ranks' weights differ after training (checksums {sums}): a gradient went unsynced")
    if not is_main():
        raise WorkerDone


# ------------------------------------------------------------------------------------------------- launching
def free_port() -> int:
    """A TCP port free on the loopback interface now (the rendezvous of a one-machine `fit --nproc`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relaunch(nproc: int, args: list[str]) -> int:
    """Run `hybridrec <args>` as `nproc` local processes under torchrun (torch.distributed.run, in this process),
    every port on the loopback interface (the rendezvous store too: `_loopback_rendezvous`), and return their exit
    code (0, or the first failed rank's: 2 for bad input, whose one-line error that rank printed). One torch thread
    per rank unless OMP_NUM_THREADS says otherwise."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # local ranks talk over loopback only
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(LOOPBACK_RENDEZVOUS, _loopback_rendezvous)
    launch = [
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--rdzv-backend",
        LOOPBACK_RENDEZVOUS,
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "--module",
        LAUNCH_MODULE,
        *args,
    ]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # a failed rank says why itself
    try:
        run(get_args_parser().parse_args(launch))
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        code = next((f.exitcode for _, f in failures if f.exitcode > 0), None)
        if code is not None:  # that rank printed its error (the others were stopped after it)
            return code
        for rank_, failure in failures:  # killed from outside: nothing of its own was printed
            name = signal.Signals(-failure.exitcode).name if -failure.exitcode in _SIGNALS else failure.exitcode
            print(f"error: rank {rank_} of {nproc} was killed ({name})", file=sys.stderr)
        return 1
    return 0


_SIGNALS = {int(s) for s in signal.Signals}


LOOPBACK_RENDEZVOUS = "hybridrec-loopback"


def _loopback_rendezvous(params):
    """torchrun's static rendezvous for one machine, its TCP store listening on 127.0.0.1 only (torch's own binds
    every interface whatever MASTER_ADDR says): the socket is bound here and handed to the store."""
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.static_tcp_rendezvous import StaticTCPRendezvous

    class Loopback(StaticTCPRendezvous):
        def get_backend(self) -> str:
            return LOOPBACK_RENDEZVOUS

        def next_rendezvous(self):
            if self._store is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._socket.bind(("127.0.0.1", self.master_port))
                self._socket.listen(128)
                self._store = TCPStore(
                    "127.0.0.1",
                    self.master_port,
                    self.world_size,
                    True,
                    self.timeout,
                    multi_tenant=True,
                    master_listen_fd=self._socket.fileno(),
                )
            return super().next_rendezvous()

    port = int(params.endpoint.rsplit(":", 1)[1])
    return Loopback("127.0.0.1", port, 0, 1, params.run_id, int(params.config.get("timeout", 600)))
