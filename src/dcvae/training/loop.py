"""The training loop: one function, `train(config, run_dir)`, on Accelerate (CPU, one GPU, or several processes
through `accelerate launch` / torchrun with no code change).

Per generator iteration (see objectives/phases.py): `d_steps` D updates, an encoder/decoder update, a contrastive
update, then the decoder EMA. With several processes each rank takes its slice of every global batch, gradients are
averaged by an explicit all-reduce before each optimiser step (the GAN phases use D in three roles, which DDP's
one-forward-one-backward contract does not fit), and contrastive keys are gathered so every rank keeps the same
queues. Only rank 0 writes.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from ..config import Config
from ..data import build_dataset
from ..data.stream import BatchStream
from ..errors import UserError
from ..files import atomic_write_text
from ..networks import build_networks, copy_buffers, growing_modules, memory_format, set_fold_resampling
from ..objectives.phases import TERMS, contrastive_phase, discriminator_phase, generator_phase
from ..objectives.queue import NegativeQueue
from ..objectives.noise import BatchNoise
from . import checkpoint as ckpt
from .distributed import average_gradients, use_global_batch_statistics, world_size
from .growth import GrowthSchedule, Phase, real_images
from .preflight import preflight
from .run_dir import prepare_run_dir, read_summary, write_image_grid

log = logging.getLogger("dcvae.train")


class NonFiniteError(RuntimeError):
    """A loss, gradient or weight became NaN or infinite during the iteration; the message names which."""


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX): there bf16 autocast is several times
    faster than float32 (docs/results.md); elsewhere it would be emulated, and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_backend_problem(device: torch.device) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels for `device`, or None when it can:
    on a GPU it needs Triton, on a CPU a C++ compiler."""
    import importlib.util
    import shutil

    if device.type == "cuda":
        found = importlib.util.find_spec("triton") is not None
        return None if found else "inductor needs Triton for GPU kernels (pip install triton)"
    compiler = os.environ.get("CXX", "g++")
    return None if shutil.which(compiler) else f"inductor needs a C++ compiler for CPU kernels ({compiler} not found)"


def _step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> list[torch.Tensor]:
    """Backward, average gradients across processes, step each optimiser. Parameters without a gradient (not in
    this loss's graph) are skipped by Adam, so each loss updates exactly the parameters it reaches.

    Returns each optimiser's gradient norm (a 0-dim float tensor, not synchronised; 0 when nothing had a gradient).
    """
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    norms = []
    for opt in optimizers:
        params = [p for group in opt.param_groups for p in group["params"]]
        average_gradients(params)
        grads = [p.grad for p in params if p.grad is not None]
        norms.append(torch.stack(torch._foreach_norm(grads)).norm().float() if grads else loss.new_zeros(()))
        opt.step()
    return norms


def _own_copy_without_grad(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of CUDA-graphed networks: a call made without autograd gets its own copy of the outputs.

    CUDA graph trees recycle a graph's output memory when the next compiled call starts a new step, which they
    assume whenever no backward is pending, so the D step's graph-free fakes (a decoder call, then another) would
    be overwritten before D sees them. Registered wrapped in torch.compiler.disable, so the copy is eager (wrapped
    there, not here: the decorator imports torch._dynamo, ~2.5 s, into every process that imports the loop)."""
    if torch.is_grad_enabled():
        return None
    return torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, output)


@torch.no_grad()
def _ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source for parameters; buffers (BatchNorm statistics, spectral-norm
    vectors, growth phases) are copied."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), 1.0 - decay)
    copy_buffers(target, source)


def _rng_state() -> dict[str, Any]:
    """The global generators (nothing in the loop draws from them, but user code and libraries may)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np.random.get_state()[0], torch.from_numpy(np.random.get_state()[1].copy()),
                       *np.random.get_state()[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_cpu(obj: Any) -> Any:
    """Tensors anywhere in a nested state -> CPU, so a checkpoint loads on any device layout."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class Trainer:
    """Everything a run holds: networks, EMA decoder, momentum discriminator, optimisers, queues, data stream.
    `training_state()` and `load()` cover all of it; `run_iteration()` is one generator iteration."""

    def __init__(self, cfg: Config, accelerator: Accelerator, dataset: Dataset | None = None,
                 bf16: bool | None = None):
        """`bf16`: autocast the forward passes to bfloat16 (default: train.mixed_precision == "bf16"). Autocast is
        ours rather than Accelerate's, whose process-wide state cannot change precision between two runs."""
        self.cfg, self.acc = cfg, accelerator
        device, t, o = accelerator.device, cfg.train, cfg.objective
        bf16 = t.mixed_precision == "bf16" if bf16 is None else bf16
        self.autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16)
        self.terms = TERMS[o.variant]
        torch.set_flush_denormal(t.flush_denormal)
        set_seed(t.seed)   # torch (identical initial weights on every rank), Python and NumPy, as saved in checkpoints
        self.nets = build_networks(cfg.model)
        self.memory_format = memory_format(t.channels_last)
        for module in (self.nets.encoder, self.nets.decoder, self.nets.discriminator):
            set_fold_resampling(module, t.fold_resampling)
            use_global_batch_statistics(module)   # batch statistics of the global batch (no-op on one process)
            module.to(device, memory_format=self.memory_format).train()
        self.decoder_ema = copy.deepcopy(self.nets.decoder).eval().requires_grad_(False)
        self.momentum_discriminator = copy.deepcopy(self.nets.discriminator).eval().requires_grad_(False)
        self._compile(device)
        adam = dict(lr=t.lr, betas=tuple(t.betas))
        self.opt = {name: torch.optim.Adam(getattr(self.nets, name).parameters(), **adam)
                    for name in ("encoder", "decoder", "discriminator")}
        queue_init = torch.Generator().manual_seed(t.seed + 1)
        queues = {name: NegativeQueue(o.queue_size, cfg.model.contrastive_dim, queue_init)
                  for name in o.contrastive_layers}
        if o.patch_layer:
            channels = self.nets.discriminator.trunk.block_shapes[int(o.patch_layer[1:]) - 1][0]
            queues["patch"] = NegativeQueue(o.patch_queue_size, channels, queue_init)
        self.queues = nn.ModuleDict(queues).to(device)
        # Noise of the reparameterisation, prior samples and patch locations: its own generator, reseeded every
        # iteration from (seed, iteration), so that its state never needs saving; each rank keeps its rows of the
        # global batch's draws, as it keeps its rows of the global batch's images.
        self.noise = BatchNoise(device, accelerator.process_index, accelerator.num_processes)
        if dataset is None:
            dataset = build_dataset(cfg.data, cfg.model.image_channels, cfg.model.resolution)
        self.dataset = dataset
        # Progressive growing: the phase (resolution, fade-in alpha, batch size) follows the real images shown.
        self.schedule = GrowthSchedule(cfg)
        self.growing = growing_modules(self.nets.encoder, self.nets.decoder, self.nets.discriminator,
                                       self.decoder_ema, self.momentum_discriminator)
        self.images_seen = 0
        self.phase = self.schedule.phase(0)
        self.stream = BatchStream(dataset, self.phase.batch_size, t.seed, device, accelerator.process_index,
                                  accelerator.num_processes, cfg.data.num_workers)
        self.iteration = 0
        self.rollbacks = 0
        self._finite_checks: list[tuple[str, torch.Tensor]] = []

    def _compile(self, device: torch.device) -> None:
        """train.compile / train.cuda_graphs: torch.compile the encoder, decoder and discriminator in place (the
        parameter names, and so the checkpoints, stay those of the eager modules), or say what it falls back to."""
        t = self.cfg.train
        graphs = t.cuda_graphs and device.type == "cuda"
        if t.cuda_graphs and not graphs:
            log.warning("train.cuda_graphs needs a CUDA device and this run is on %s; running without CUDA graphs",
                        device.type)
        problem = compile_backend_problem(device) if t.compile or graphs else None
        if problem:
            log.warning("train.compile: %s; falling back to eager mode", problem)
        self.compiled = (t.compile or graphs) and not problem
        self.cuda_graphs = graphs and self.compiled
        if not self.compiled:
            return
        for module in (self.nets.encoder, self.nets.decoder, self.nets.discriminator):
            module.compile(mode="reduce-overhead" if self.cuda_graphs else None)
            if self.cuda_graphs:
                module.register_forward_hook(torch.compiler.disable(_own_copy_without_grad))

    # -- one generator iteration -------------------------------------------------------------------------------
    def _step(self, phase: str, loss: torch.Tensor, names: tuple[str, ...]) -> None:
        """`_step` on the named optimisers, keeping the loss and gradient norms (on the device, no synchronisation)
        for the end-of-iteration finiteness check."""
        norms = _step(loss, [self.opt[name] for name in names])
        self._finite_checks.append((f"the {phase} loss", loss.detach().float()))
        self._finite_checks += [(f"the {name} gradients of the {phase} step", norm) for name, norm in zip(names, norms)]

    def _check_finite(self) -> None:
        """Raise NonFiniteError naming the first non-finite loss, gradient or weight of this iteration. One
        synchronisation per iteration; with several processes every rank reaches the same verdict."""
        params = [p for opt in self.opt.values() for group in opt.param_groups for p in group["params"]]
        checks = self._finite_checks + [("the weights", torch.stack(torch._foreach_norm(params)).sum().float())]
        self._finite_checks = []
        bad = (~torch.isfinite(torch.stack([value for _, value in checks]))).float()
        if world_size() > 1:
            dist.all_reduce(bad)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            raise NonFiniteError(f"{checks[first][0]} became non-finite at iteration {self.iteration + 1}")

    def _enter_phase(self) -> Phase:
        """Set the growth phase of `images_seen` on every progressive module and the data stream."""
        self.phase = phase = self.schedule.phase(self.images_seen)
        for module in self.growing:
            module.set_growth(phase.level, phase.alpha)
        self.stream.set_batch_size(phase.batch_size)
        return phase

    def _real_batch(self) -> torch.Tensor:
        x, _ = self.stream.next()
        return real_images(x, self.phase).contiguous(memory_format=self.memory_format)

    def run_iteration(self) -> dict[str, torch.Tensor]:
        """One generator iteration -> the logged statistics; raises NonFiniteError on divergence (the state is then
        partly updated: roll back with `load`)."""
        cfg, nets, acc = self.cfg, self.nets, self.acc
        o, t = cfg.objective, cfg.train
        stats: dict[str, torch.Tensor] = {}
        self.noise.seed(t.seed * 1_000_003 ** 2 + self.iteration)
        phase = self._enter_phase()
        # the G step's prior samples keep the configured ratio to the real batch when the batch grows or shrinks
        sample_batch_size = max(1, round(t.sample_batch_size * phase.batch_size / t.batch_size))
        if self.terms.gan:
            for _ in range(t.d_steps):
                x = self._real_batch()
                with self.autocast():
                    loss, s = discriminator_phase(nets, x, o, self.noise, t.released_d_step)
                self._step("discriminator", loss, ("discriminator",))
                stats.update(s)
        else:
            x = self._real_batch()
        if self.terms.gan or self.terms.reconstruction:
            nets.discriminator.requires_grad_(False)  # D is a fixed critic here: no gradient for its weights
            with self.autocast():
                loss, s = generator_phase(nets, x, o, self.terms, self.noise, sample_batch_size,
                                          acc.num_processes)
            self._step("generator", loss, ("encoder", "decoder"))
            nets.discriminator.requires_grad_(True)
            stats.update(s)
        if self.terms.contrastive:
            _ema_update(self.momentum_discriminator, nets.discriminator, o.momentum)
            patch_on = bool(o.patch_layer) and self.iteration >= o.patch_start
            with self.autocast():
                loss, s, keys = contrastive_phase(nets, self.momentum_discriminator, self.queues, x, o, self.noise,
                                                  patch_on, acc.num_processes)
            self._step("contrastive", loss, ("encoder", "decoder", "discriminator"))
            for name, k in keys.items():
                self.queues[name].enqueue(acc.gather(k.float().contiguous()))
            stats.update(s)
        _ema_update(self.decoder_ema, nets.decoder, t.ema_decay)
        self._check_finite()
        self.iteration += 1
        self.images_seen += self.images_per_iteration
        if self.schedule.progressive:
            stats["growth/resolution"] = torch.tensor(float(phase.resolution), device=acc.device)
            stats["growth/alpha"] = torch.tensor(phase.alpha, device=acc.device)
        return stats

    @property
    def images_per_iteration(self) -> int:
        """Real images one generator iteration takes (all processes), at the current phase's batch size."""
        steps = self.cfg.train.d_steps if self.terms.gan else 1
        return steps * self.phase.batch_size * self.acc.num_processes

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _weight_modules(self) -> dict[str, nn.Module]:
        """What model.safetensors holds, by key prefix."""
        return {"encoder": self.nets.encoder, "decoder": self.nets.decoder, "decoder_ema": self.decoder_ema,
                "discriminator": self.nets.discriminator}

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": v for prefix, module in self._weight_modules().items()
                for k, v in module.state_dict().items()}

    def training_state(self) -> dict[str, Any]:
        return _to_cpu({
            "iteration": self.iteration,
            "images_seen": self.images_seen,
            "rollbacks": self.rollbacks,
            "processes": self.acc.num_processes,
            "data": self.stream.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.opt.items()},
            "momentum_discriminator": self.momentum_discriminator.state_dict(),
            "queues": self.queues.state_dict(),
            "rng": _rng_state(),
        })

    def load(self, folder: Path) -> None:
        """Continue from a verified checkpoint folder."""
        self.load_state(ckpt.load_weights(folder), ckpt.load_training_state(folder), folder)

    def load_state(self, weights: dict[str, torch.Tensor], state: dict[str, Any], source: Path | str) -> None:
        """Restore everything `weights()` and `training_state()` returned; `source` names them in messages."""
        for prefix, module in self._weight_modules().items():
            ckpt.load_module_weights(module, weights, prefix, source)
        ranks = state["processes"]
        if ranks != self.acc.num_processes:
            raise UserError(f"{source} was written by {ranks} process(es) and this run has "
                            f"{self.acc.num_processes}; resume with the same number of processes")
        for name, opt in self.opt.items():
            opt.load_state_dict(state["optimizers"][name])
        self.momentum_discriminator.load_state_dict(state["momentum_discriminator"])
        self.queues.load_state_dict(state["queues"])
        self.stream.load_state_dict(state["data"])
        _set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.images_seen = int(state.get("images_seen", 0))
        self.phase = self.schedule.phase(self.images_seen)
        self.rollbacks = int(state.get("rollbacks", 0))
        self._finite_checks = []
        self._set_learning_rate()

    def _set_learning_rate(self) -> None:
        """train.lr lowered once per rollback; applied after loading optimiser state (which carries its own lr),
        so that a learning rate changed with --set on resume takes effect."""
        lr = self.cfg.train.lr * self.cfg.train.rollback_lr_factor ** self.rollbacks
        for opt in self.opt.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """A copy of (weights, training state) in memory, for `load_state`."""
        return {k: v.clone() for k, v in self.weights().items()}, copy.deepcopy(self.training_state())

    def roll_back(self, run_dir: Path, error: NonFiniteError, initial: tuple[dict, dict] | None) -> str:
        """After a divergence: reload the newest good checkpoint (or `initial`, the (weights, state) of iteration 0,
        while no checkpoint exists) with the learning rate lowered, or raise UserError when the policy says stop.
        Returns a description of what was done."""
        t = self.cfg.train
        if t.on_nonfinite == "stop" or self.rollbacks >= t.max_rollbacks:
            done = (f" after {self.rollbacks} rollback(s) with the learning rate lowered to "
                    f"{t.lr * t.rollback_lr_factor ** self.rollbacks:.3g}" if self.rollbacks else "")
            raise UserError(f"training diverged: {error}{done} (train.on_nonfinite={t.on_nonfinite}, "
                            f"train.max_rollbacks={t.max_rollbacks}). The checkpoints in {run_dir / 'checkpoints'} "
                            "are intact; lower train.lr and continue with dcvae train --resume --out "
                            f"{run_dir} --set train.lr=VALUE, or check the data") from None
        rollbacks = self.rollbacks + 1
        if ckpt.list_checkpoints(run_dir / "checkpoints"):
            source = ckpt.resolve_checkpoint(run_dir, need_state=True)
            self.load(source)
        elif initial is not None:
            source = "the initial weights"
            self.load_state(*initial, source)
        else:
            raise UserError(f"training diverged: {error}, and {run_dir} holds no checkpoint to roll back to") from None
        self.rollbacks = rollbacks
        self._set_learning_rate()
        return (f"{error}; rolled back to {source} (iteration {self.iteration}), rollback {rollbacks} of at most "
                f"{t.max_rollbacks}, learning rate now {self.opt['encoder'].param_groups[0]['lr']:.3g}")

    def save(self, run_dir: Path) -> Path | None:
        path = None
        if self.acc.is_main_process:
            path = ckpt.save_checkpoint(run_dir / "checkpoints", self.iteration, self.weights(), self.cfg.to_dict(),
                                        self.training_state(), self.cfg.train.keep_checkpoints)
        self.acc.wait_for_everyone()
        return path

    # -- pictures ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_images(self, run_dir: Path, writer, fixed_x: torch.Tensor, fixed_z: torch.Tensor) -> None:
        """Inputs | reconstructions and samples, from the EMA decoder, in eval mode (which changes no state)."""
        encoder = self.nets.encoder
        fixed_x = real_images(fixed_x, self.phase)
        encoder.eval()
        mu, _ = encoder(fixed_x)
        encoder.train()
        recon = self.decoder_ema(mu)
        samples = self.decoder_ema(fixed_z)
        pairs = torch.stack([fixed_x, recon], dim=1).flatten(0, 1)
        tag = f"{self.iteration:07d}"
        grid_r = write_image_grid(pairs, run_dir / "images" / f"reconstructions-{tag}.png", nrow=16)
        grid_s = write_image_grid(samples, run_dir / "images" / f"samples-{tag}.png", nrow=8)
        if writer is not None:
            writer.add_image("reconstructions", grid_r, self.iteration)
            writer.add_image("samples", grid_s, self.iteration)


def _periodic_evaluation(cfg: Config, acc: Accelerator, checkpoint: Path | None, writer, iteration: int) -> None:
    """Rank 0 evaluates the checkpoint just written with `dcvae.metrics.evaluate` (the code of `dcvae evaluate`),
    which appends its line to the run's metrics.jsonl; the values also go to TensorBoard as eval/<metric>.

    The training state is not touched: evaluate loads its own copy of the weights from the checkpoint, in eval
    mode, and draws from its own seeded generators. Building networks and iterating DataLoaders do draw from the
    global random generators, which the checkpoints save, so those are restored afterwards. The other ranks wait.
    """
    t = cfg.train
    if acc.is_main_process:
        from ..metrics.evaluate import evaluate
        state = _rng_state()
        try:
            # eval_n reference images as well: the whole training split through Inception would take an hour on a
            # CPU; the reference statistics are cached after the first evaluation.
            result = evaluate(checkpoint, metrics=t.eval_metrics, n_generated=t.eval_n, n_real=t.eval_n,
                              n_recon=t.eval_n, seed=t.seed, device=str(acc.device), progress=False)
        finally:
            _set_rng_state(state)
        for name, value in result["metrics"].items():
            writer.add_scalar(f"eval/{name}", value, iteration)
        log.info("iteration %d: %s", iteration, ", ".join(f"{k} {v:.4g}" for k, v in result["metrics"].items()))
    acc.wait_for_everyone()


def _mean_over_processes(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each statistic is a mean over the process's batch; their mean over processes is the global batch's."""
    if not stats:
        return {}
    values = torch.stack(list(stats.values()))
    if world_size() > 1:
        dist.all_reduce(values)
        values /= world_size()
    return dict(zip(stats, values.tolist()))


def _forget_after(metrics_log: Path, iteration: int) -> None:
    """Drop the lines a stopped run logged after `iteration` (they are logged again), and a line cut by a kill."""
    if not metrics_log.is_file():
        return
    kept = []
    for line in metrics_log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", 0) <= iteration:
            kept.append(line)
    atomic_write_text(metrics_log, "".join(line + "\n" for line in kept))


def train(cfg: Config, run_dir: str | Path, resume: str | bool | None = None, progress: bool = True
          ) -> dict[str, Any]:
    """Train `cfg` into `run_dir`; `resume` = True (newest checkpoint of run_dir) or a checkpoint path.

    Returns the summary also written to run_dir/summary.json.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    cfg.validate()
    run_dir = Path(run_dir)
    mixed = cfg.train.mixed_precision
    if mixed == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        log.warning("train.mixed_precision=bf16 needs a GPU or a CPU with bf16 instructions (AVX512-BF16 or AMX); "
                    "this machine has neither, so training runs in float32")
        mixed = "no"
    acc = Accelerator(cpu=not torch.cuda.is_available())
    resume_from = None
    if resume is True and (run_dir / "config.json").is_file() and not ckpt.list_checkpoints(run_dir / "checkpoints"):
        log.warning("%s was stopped before its first checkpoint: starting it again from iteration 0", run_dir)
    elif resume:
        resume_from = ckpt.resolve_checkpoint(run_dir if resume is True else resume, need_state=True)
    # Whatever would stop the run later (output folder, disk space, another run, resume mismatch, metric weights,
    # unreadable data) is reported now, before anything is written.
    dataset = preflight(cfg, run_dir, resume_from, resuming=bool(resume), main=acc.is_main_process,
                        processes=acc.num_processes)
    acc.wait_for_everyone()   # a rank whose data cannot be read stops the run before rank 0 writes
    if acc.is_main_process:
        prepare_run_dir(run_dir, cfg, resuming=bool(resume))
    acc.wait_for_everyone()

    trainer = Trainer(cfg, acc, dataset=dataset, bf16=mixed == "bf16")
    trainer.stream.skipped_file = run_dir / "skipped.txt" if acc.is_main_process else None
    if resume_from is not None:
        trainer.load(resume_from)
        log.info("resumed from %s at iteration %d", resume_from, trainer.iteration)
    if resume and acc.is_main_process:
        _forget_after(run_dir / "metrics.jsonl", trainer.iteration)
    if resume and trainer.iteration >= cfg.train.iterations:
        # Nothing to train: the summary of the run that got here (its time, its last losses) stays as it is.
        done = read_summary(run_dir)
        if done is not None and done.get("iterations") == trainer.iteration:
            log.info("%s is already trained to iteration %d (train.iterations=%d): nothing to do", run_dir,
                     trainer.iteration, cfg.train.iterations)
            return done

    # A new run that diverges before its first checkpoint restarts from here.
    initial = trainer.snapshot() if trainer.iteration == 0 else None

    t = cfg.train
    main = acc.is_main_process
    # purge_step: TensorBoard drops what a killed run logged after the checkpoint it resumes from.
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=trainer.iteration + 1 if resume else None
                           ) if main else None
    n_fixed = min(8, len(trainer.dataset))
    fixed_x = torch.stack([trainer.dataset[i][0] for i in range(n_fixed)]).to(acc.device)
    fixed_z = torch.randn(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(t.seed + 2)).to(acc.device)
    window: dict[str, list[torch.Tensor]] = defaultdict(list)
    last: dict[str, float] = {}
    bar = tqdm(total=t.iterations, initial=trainer.iteration, disable=not (progress and main), dynamic_ncols=True,
               desc="train")
    started, window_start, window_iters = time.perf_counter(), time.perf_counter(), 0
    images_per_s = 0.0
    try:
        while trainer.iteration < t.iterations:
            try:
                stats = trainer.run_iteration()
            except NonFiniteError as error:
                done = trainer.roll_back(run_dir, error, initial)
                log.warning("%s", done)
                if main:
                    with open(run_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps({"iteration": trainer.iteration, "event": "rollback", "reason": done})
                                + "\n")
                bar.n = trainer.iteration
                window.clear()
                window_start, window_iters = time.perf_counter(), 0
                continue
            for key, value in stats.items():
                window[key].append(value)
            window_iters += 1
            bar.update(1)
            it = trainer.iteration
            if it % t.log_every == 0 or it == t.iterations:
                elapsed = time.perf_counter() - window_start
                images_per_s = window_iters * trainer.images_per_iteration / max(elapsed, 1e-9)
                last = _mean_over_processes({k: torch.stack(v).float().mean() for k, v in window.items()})
                record = {"iteration": it, "epoch": trainer.stream.epoch, "images_per_s": round(images_per_s, 2),
                          **{k: round(v, 6) for k, v in last.items()}}
                if main:
                    with open(run_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    for k, v in last.items():
                        writer.add_scalar(k, v, it)
                    writer.add_scalar("speed/images_per_s", images_per_s, it)
                shown = {k.split("/")[-1] if k.startswith("loss/") else k: f"{v:.3g}" for k, v in last.items()
                         if k.startswith(("loss/", "acc/"))}
                bar.set_postfix(shown | {"img/s": f"{images_per_s:.0f}"}, refresh=False)
                window.clear()
                window_start, window_iters = time.perf_counter(), 0
            if main and (it % t.image_every == 0 or it == t.iterations):
                trainer.write_images(run_dir, writer, fixed_x, fixed_z)
            if it % t.checkpoint_every == 0 or it == t.iterations:
                checkpoint = trainer.save(run_dir)
                initial = None   # from now on a divergence rolls back to a checkpoint
                if t.eval_every and it % t.eval_every == 0:
                    _periodic_evaluation(cfg, acc, checkpoint, writer, it)
    finally:
        bar.close()
        trainer.stream.close()
        if writer is not None:
            writer.close()
    summary = {"iterations": trainer.iteration, "epochs": trainer.stream.epoch, "variant": cfg.objective.variant,
               "wall_seconds": round(time.perf_counter() - started, 1), "images_per_s": round(images_per_s, 2),
               "final": last, "data": trainer.dataset.description, "device": str(acc.device),
               "processes": acc.num_processes}
    if main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
