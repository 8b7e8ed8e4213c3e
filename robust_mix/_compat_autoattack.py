"""RobustBench's AutoAttack interface, implemented on the registry's ``pyautoattack`` (owned by :mod:`robust_mix._compat`).

RobustBench 1.1.1's ``benchmark()`` was written against the AutoAttack that it imports as
``autoattack``: ``AutoAttack(model, norm=, eps=, version=, device=, log_path=)``, then
``run_standard_evaluation(x, y, bs=, state_path=)`` returning the adversarial images, and, after a
run with ``state_path``, ``EvaluationState.from_disk(path).robust_flags.mean()``. ``pyautoattack``
0.2.0 runs the same attacks behind another interface (keyword-only arguments, ``batch_size=``, a
``pathlib.Path`` state, ``(x_adv, y_adv)`` returned, no log file, boolean robust flags that
``torch`` cannot average, and no working resume: :class:`ResumableState`, :meth:`AutoAttack._resume`).
:class:`AutoAttack` and :class:`EvaluationState` here translate; the attacks themselves are
pyautoattack's, unchanged.

RobustBench builds the adversary inside ``benchmark()``, out of the caller's reach; seeds and
budgets are set for it with :func:`autoattack_settings`:

>>> with autoattack_settings(seed=0):
...     clean_acc, robust_acc = robustbench.eval.benchmark(model, dataset="cifar10", eps=8 / 255)
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

import pyautoattack
import pyautoattack.state

from robust_mix.protocol import (ADAPTIVE_STAGES, AUTOATTACK_STAGES, MIN_CLASSES, MIN_LARGEREPS_ITERATIONS,
                                 class_count_problem, iteration_problem)
from robust_mix.validate import (InvalidInputError, check_bool, check_choice, check_device, check_eps,
                                 check_eps_within_images, check_examples, check_materialized, check_model_examples,
                                 check_seed, check_threat_model, positive_int, spelled_alike)

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: A function that changes a freshly built pyautoattack adversary (budgets, target counts).
Configure = Callable[[pyautoattack.AutoAttack], None]
#: pyautoattack's logger; ``log_path`` adds a file handler to it for the run.
LOGGER_NAME = "auto-attack"
#: pyautoattack's versions (``"custom"``: the attacks named in ``attacks_to_run``).
VERSIONS = ("standard", "plus", "rand", "custom")


@dataclass
class _Settings:
    seed: Optional[int] = None
    configure: Optional[Configure] = None


_SETTINGS = _Settings()


@contextlib.contextmanager
def autoattack_settings(*, seed: Optional[int] = None, configure: Optional[Configure] = None) -> Iterator[None]:
    """Settings for every :class:`AutoAttack` built inside the block (RobustBench builds its own).

    Args:
        seed: the attacks' seed when the caller gives none (RobustBench never does; pyautoattack then
            seeds from the clock, so two runs differ).
        configure: called on each new adversary after its version's settings are applied, e.g. to
            reduce iteration counts for a quick look. Any change makes the result non-comparable
            with the leaderboard.
    """
    global _SETTINGS
    previous = _SETTINGS
    _SETTINGS = _Settings(seed=None if seed is None else check_seed("seed", seed), configure=configure)
    try:
        yield
    finally:
        _SETTINGS = previous


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


def check_float32_model(model: nn.Module) -> None:
    """Refuse a model that declares (``model.dtype``, as :class:`robust_mix.MixedClassifier` does) a dtype other
    than float32: pyautoattack converts every image it attacks with ``.float()``, and such a model refuses them
    inside the first attack, asking for images of its dtype that the caller had already given."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype != torch.float32:
        raise InvalidInputError(f"the model computes in {dtype}, and pyautoattack's AutoAttack (which RobustBench's "
                                "benchmark() runs, on float32 images) attacks float32 images only; call model.float() "
                                "first, or evaluate it with robust_mix.benchmark(model, ...), which attacks a model in "
                                "its own dtype")


def _check_attacks(attacks: Sequence[str]) -> None:
    """``attacks_to_run`` of ``version="custom"``: at least one of pyautoattack's attacks, each once."""
    expected = f"version='custom' runs the attacks in attacks_to_run, a list of {list(AUTOATTACK_STAGES)}"
    if isinstance(attacks, str):
        raise InvalidInputError(f"{expected}; got the string {attacks!r}: use [{attacks!r}]")
    names = list(attacks)
    unknown = [a for a in names if a not in AUTOATTACK_STAGES]
    if not names or unknown:
        raise InvalidInputError(f"{expected}; got {f'unknown attack(s) {unknown}' if names else 'none'}"
                                + "".join(_attack_hint(a) for a in unknown[:1]))
    if len(set(names)) != len(names):
        raise InvalidInputError(f"attacks_to_run repeats attacks in {names}; list each attack once")


class _RandomizedNotice(logging.Filter):
    """pyautoattack's "it seems to be a randomized defense! Please use version="rand"" warning, once per run (it checks
    before every attack of the cascade, so a run warned once per attack), saying how to follow it: RobustBench's
    ``benchmark()``, where the warning mostly appears, has no ``version`` to change."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version, self.seen = version, False

    def filter(self, record: logging.LogRecord) -> bool:
        if "randomized defense" not in str(record.msg):
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = (f"{record.getMessage()} The {self.version!r} version's attacks are deterministic and overstate "
                      "the robustness of a randomized model: run AutoAttack(model, version='rand', ...) (APGD with "
                      "EOT), or robust_mix.benchmark(model, attack='rand'); RobustBench's benchmark() runs "
                      "version='standard' only")
        record.args = ()
        return True


def _attack_hint(name: Any) -> str:
    """What an unknown ``attacks_to_run`` entry may have meant: an attack spelled otherwise (``"APGD-CE"``), a
    version, or one of robust_mix's adaptive stages (run by its harness only)."""
    if not isinstance(name, str):
        return ""
    same = spelled_alike(name, AUTOATTACK_STAGES)
    if same:
        return f" (names are lower case with '-': did you mean {same!r}?)"
    if name.strip() in VERSIONS:
        return f" ({name.strip()!r} is a version, not an attack: pass version={name.strip()!r} without attacks_to_run)"
    if name.strip() in ADAPTIVE_STAGES:
        return (f" ({name.strip()!r} is robust_mix's adaptive attack, which its harness runs: "
                f"robust_mix.benchmark(model, attack={name.strip()!r}, ...))")
    return ""


class AutoAttack(pyautoattack.AutoAttack):
    """AutoAttack with the constructor and methods RobustBench calls; the attacks are pyautoattack's.

    Args:
        model: the classifier (images in, logits out).
        norm: ``"Linf"``, ``"L2"`` or ``"L1"`` (or RobustBench's ``ThreatModel``).
        eps: the perturbation budget (at most 1 under ``Linf``: ``8/255``, not ``8``).
        seed: the attacks' seed (default: :func:`autoattack_settings`' seed, else the clock's).
        verbose: log progress to the ``auto-attack`` logger.
        attacks_to_run: the attacks of ``version="custom"``.
        version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"``.
        is_tf_model: TensorFlow models are not supported (pyautoattack runs PyTorch models only).
        device: where the attacks run (default: the model's device).
        log_path: a file that receives the run's log lines.

    Raises:
        robust_mix.validate.InvalidInputError: a norm, eps, version, attack name or device that pyautoattack
            would take without complaint and answer with a wrong number or a failure deep in a run (a seed that is
            no whole number from 0 up, ``verbose`` that is no bool, a ``log_path`` that is a folder or cannot be
            written; its folder is created), or a
            model that declares a dtype other than float32 (pyautoattack attacks float32 images); at
            ``run_standard_evaluation``, before the first attack, an attack the model has too few classes for, or
            a model whose BatchNorm layers are in training mode (the attacks' queries would update their statistics
            and each prediction would depend on its batch; RobustBench's ``benchmark()`` refuses it too).
    """

    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 0.3, seed: Optional[int] = None,
                 verbose: bool = True, attacks_to_run: Sequence[str] = (), version: str = "standard",
                 is_tf_model: bool = False, device: Union[str, torch.device, None] = None,
                 log_path: Optional[PathLike] = None) -> None:
        if is_tf_model:
            raise ValueError("is_tf_model=True: pyautoattack's AutoAttack attacks PyTorch models only; wrap the "
                             "TensorFlow model as a torch.nn.Module, or use the original AutoAttack's TF support")
        version = check_choice("version", version, VERSIONS)
        if version != "custom" and attacks_to_run:
            raise ValueError(f"attacks_to_run={list(attacks_to_run)} is used with version='custom' only; "
                             f"version={version!r} runs its own attacks")
        if version == "custom":
            _check_attacks(attacks_to_run)
        norm = check_threat_model(norm, "norm")
        eps = check_eps(eps, norm)
        check_materialized(model)
        check_float32_model(model)
        verbose = check_bool("verbose", verbose)
        if log_path is not None:  # a folder, or one that cannot be written, failed at the run with a bare OSError
            log_path = _benchmark_file("log_path", log_path, "log file", "autoattack.log")
        settings = _SETTINGS
        super().__init__(model, attacks=list(attacks_to_run) if version == "custom" else None,
                         device=check_device(device) if device is not None else _model_device(model), eps=eps,
                         norm=norm,
                         seed=check_seed("seed", seed) if seed is not None else settings.seed, version=version)
        self.verbose = verbose
        self.log_path = log_path
        if settings.configure is not None:
            settings.configure(self)

    @contextlib.contextmanager
    def _log_file(self) -> Iterator[None]:
        if self.log_path is None:
            yield
            return
        logger = logging.getLogger(LOGGER_NAME)
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if self.verbose else logging.WARNING)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.close()

    def run_standard_evaluation(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                return_labels: bool = False, state_path: Optional[PathLike] = None
                                ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the attacks on ``x_orig`` ``(N, C, H, W)``, ``y_orig`` ``(N,)`` in batches of ``bs``.

        Returns:
            The adversarial images ``(N, C, H, W)`` (the clean image where no attack succeeded), and
            their predicted labels ``(N,)`` too with ``return_labels``. With ``state_path`` (a str or
            Path), finished attacks are recorded there and a later call resumes after them; only
            this call's adversarial images are returned then, the robust flags are in the state.
        """
        bs = positive_int("bs", bs)
        if state_path is not None:  # a folder, or one that cannot be written, was a bare OSError
            state_path = _benchmark_file("state_path", state_path, "state file", "aa_state.json")
        x_orig, y_orig, num_classes = self._check_examples(x_orig, y_orig, "run_standard_evaluation()")
        check_eps_within_images(self.epsilon, self.norm, x_orig.shape[1:])
        self._check_classes(num_classes)
        self._check_iterations()
        notice = _RandomizedNotice(self.version)
        pyautoattack_logger = logging.getLogger(LOGGER_NAME)
        pyautoattack_logger.addFilter(notice)
        try:
            with self._log_file():
                x_adv, y_adv = self._cascade(x_orig, y_orig, bs, state_path)
        finally:
            pyautoattack_logger.removeFilter(notice)
        return (x_adv, y_adv) if return_labels else x_adv

    def _check_examples(self, x: torch.Tensor, y: torch.Tensor, call: str
                        ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Images and labels as :func:`robust_mix.validate.check_examples` wants them, and as the model declares them
        and scores them: its ``input_shape``, and labels below the number of classes its output has (pyautoattack
        counted an example labelled 15 by a 10-class model as one more misclassified image); a model whose BatchNorm
        layers are in training mode is refused (``call`` names the method in the message). Returns the images, the
        labels and that number of classes (one forward pass on one image)."""
        if isinstance(self.model, nn.Module):
            x, y = check_model_examples(self.model, x, y)
            _check_benchmark_mode(self.model, call)
        else:  # a plain function: nothing declared
            x, y = check_examples(x, y)
        with torch.no_grad():
            num_classes = self.get_logits(x[:1].to(self.device)).shape[-1]
        x, y = check_examples(x, y, None, num_classes)
        return x, y, num_classes

    def _check_classes(self, num_classes: int) -> None:
        """Refuse attacks a model scoring ``num_classes`` classes is too small for
        (:func:`robust_mix.protocol.class_count_problem`): pyautoattack only warns, then fails mid-run with a bare
        ``IndexError``."""
        targets = {"apgd-t": self.apgd_targeted.n_target_classes, "fab-t": self.fab.n_target_classes}
        for attack in self.attacks_to_run:
            problem = class_count_problem(attack, num_classes, targets.get(attack))
            if problem is None:
                continue
            if num_classes < MIN_CLASSES.get(attack, 2):
                others = [a for a in self.attacks_to_run if class_count_problem(a, num_classes) is None]
                raise InvalidInputError(f"{problem}; leave it out: version='custom', attacks_to_run={others}")
            owner = "apgd_targeted" if attack == "apgd-t" else "fab"
            raise InvalidInputError(
                f"{problem}; set adversary.{owner}.n_target_classes = {num_classes - 1} (every other class) before "
                "the run, or, for RobustBench's benchmark(), pass robust_mix.autoattack_settings(configure=...) a "
                "function that sets it")

    def _check_iterations(self) -> None:
        """Refuse an APGD budget too small for L1's rounds (:func:`robust_mix.protocol.iteration_problem`), which a
        ``configure`` (:func:`autoattack_settings`) or a change of ``adversary.apgd`` may have set: pyautoattack failed
        with ``zeros: Dimension size must be non-negative`` or ran no iteration at the run's eps."""
        apgds = {"apgd-ce": self.apgd, "apgd-dlr": self.apgd, "apgd-t": self.apgd_targeted}
        for attack in self.attacks_to_run:
            apgd = apgds.get(attack)
            problem = apgd and iteration_problem(attack, apgd.n_iter_orig, apgd.use_largereps, self.norm)
            if problem:
                owner = "apgd_targeted" if attack == "apgd-t" else "apgd"
                raise InvalidInputError(f"{problem}; give adversary.{owner} {MIN_LARGEREPS_ITERATIONS} iterations or "
                                        "more (robust_mix.attacks.set_apgd_iterations, which sets its step-size "
                                        "schedule too)")

    def _cascade(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int, path: Optional[Path]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """pyautoattack's cascade, one attack at a time: each attack is a pyautoattack run on the
        examples every earlier attack failed on (the examples, batches and seeds of one uninterrupted
        run), and the state records it as soon as it finishes.

        pyautoattack 0.2.0 cannot resume its own runs (a resumed run ends in an ``UnboundLocalError``)
        and may record a finished attack a minute late; here a run stopped anywhere resumes after
        the last finished attack.
        """
        attacks = list(self.attacks_to_run)
        state = self._state(path, attacks, len(x_orig), self._setting(x_orig, y_orig))
        x_adv = x_orig.clone()
        try:
            self.attacks_to_run = []  # the clean predictions, and pyautoattack's checks of the model
            _, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=bs)
            if state.robust_flags is None:
                correct = y_adv == y_orig
                state.clean_accuracy = correct.float().mean().item()
                state.robust_flags = correct
            flags = state.robust_flags.to(y_orig.device)
            for attack in [a for a in attacks if a not in state.run_attacks]:
                robust = flags.nonzero()[:, 0]
                if len(robust) == 0:
                    break
                self.attacks_to_run = [attack]
                x_sub, y_sub = super().run_standard_evaluation(x_orig[robust], y_orig[robust], batch_size=bs)
                y_sub = y_sub.to(y_orig.device)
                hit = y_sub != y_orig[robust]
                x_adv[robust[hit]], y_adv[robust[hit]] = x_sub[hit].to(x_adv.device), y_sub[hit]
                flags = flags.clone()
                flags[robust[hit]] = False
                state.robust_flags = flags
                state.add_run_attack(attack)
                state.to_disk(force=True)
        finally:
            self.attacks_to_run = attacks
        return x_adv, y_adv

    def _setting(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """What a state's flags depend on besides the attacks' names: the model, the threat model, the version, the
        seed, every attack's budget and the examples (digests of the model and the examples), as JSON values."""
        from robust_mix.fingerprint import model_fingerprint  # the harness's digest of a model's tensors and constants

        digest = hashlib.sha256(x.detach().cpu().contiguous().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
        budgets = {name: {key: getattr(getattr(self, name), key, None) for key in _BUDGET_FIELDS}
                   for name in ("apgd", "apgd_targeted", "fab", "square")}
        return {"norm": self.norm, "eps": float(self.epsilon), "version": self.version, "seed": self.seed,
                "budgets": budgets, "examples": digest.hexdigest()[:16], "model": model_fingerprint(self.model)}

    @staticmethod
    def _state(path: Optional[Path], attacks: list[str], n: int, setting: dict[str, Any]) -> "ResumableState":
        if path is None or not path.exists():
            state = ResumableState(set(attacks), path=path, setting=setting)
            state.to_disk(force=True)
            return state
        state = ResumableState.from_disk(path)
        if state.attacks_to_run != set(attacks):
            raise ValueError(f"{path} records a run of {sorted(state.attacks_to_run)}, this adversary runs "
                             f"{sorted(attacks)}: use another state_path for these settings")
        if state.robust_flags is not None and len(state.robust_flags) != n:
            raise ValueError(f"{path} records {len(state.robust_flags)} examples, {n} are given: use another "
                             "state_path for these examples")
        if state.setting is None:
            logger.warning("%s does not record the model, norm, eps, seed, budgets and examples of its run (written by "
                           "pyautoattack itself or an older robust_mix); resuming it assumes they are this run's", path)
            state.setting = setting
            state.to_disk(force=True)
        elif state.setting != setting:
            differs = sorted(k for k in set(state.setting) | set(setting) if state.setting.get(k) != setting.get(k))
            raise ValueError(f"{path} records a run with another {', '.join(differs)} (norm {state.setting.get('norm')}"
                             f", eps {state.setting.get('eps')}; this adversary: norm {setting['norm']}, eps "
                             f"{setting['eps']}); its flags are not this run's: use another state_path for these "
                             "settings")
        return state

    def clean_accuracy(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250) -> float:
        """The fraction of ``x_orig`` ``(N, C, H, W)`` the model classifies as ``y_orig`` ``(N,)``, in batches of ``bs``.

        The images, labels and batch size are checked as :meth:`run_standard_evaluation` checks them: pyautoattack
        compared ``(N, 1)`` labels with the ``(N,)`` predictions by broadcasting (an accuracy of 2.0), took 0-255
        pixels and ended ``bs=0`` in a ``ZeroDivisionError``.
        """
        bs = positive_int("bs", bs)
        x_orig, y_orig, _ = self._check_examples(x_orig, y_orig, "clean_accuracy()")
        return super().clean_accuracy(x_orig, y_orig, bs=bs)

    def run_standard_evaluation_individual(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                           return_labels: bool = False) -> dict:
        """Each attack on its own, on all of ``x_orig``: attack name -> adversarial images (and labels)."""
        attacks, verbose = list(self.attacks_to_run), self.verbose
        adversarial = {}
        try:
            self.verbose = False
            for attack in attacks:
                self.attacks_to_run = [attack]
                adversarial[attack] = self.run_standard_evaluation(x_orig, y_orig, bs=bs, return_labels=return_labels)
        finally:
            self.attacks_to_run, self.verbose = attacks, verbose
        return adversarial


#: The budget attributes of pyautoattack's attacks that a state records (those an attack lacks are recorded as null).
_BUDGET_FIELDS = ("n_iter", "n_restarts", "n_target_classes", "eot_iter", "n_queries", "use_largereps")


@dataclass
class ResumableState(pyautoattack.state.EvaluationState):
    """pyautoattack's state file, read back as it was written.

    pyautoattack 0.2.0 writes the set of attacks to run as its ``str()`` and the finished ones as a
    list, and reads both back unchanged (its own resume check, a set against a string, always
    fails). Here both become sets again, and the path may be a str. ``setting`` records what the flags depend on
    besides the attacks' names (:meth:`AutoAttack._setting`: model, norm, eps, version, seed, budgets, examples),
    so that a state of another run is refused (``None`` in a state written without it).
    """

    setting: Optional[dict[str, Any]] = None

    @classmethod
    def from_disk(cls, path: PathLike) -> "ResumableState":
        state = super().from_disk(Path(path))
        attacks = state._attacks_to_run
        state._attacks_to_run = set(ast.literal_eval(attacks) if isinstance(attacks, str) else attacks)
        state._run_attacks = set(state._run_attacks)
        return state


class EvaluationState(ResumableState):
    """pyautoattack's resumable state, read the way RobustBench reads it.

    ``from_disk`` takes a str or a Path, and ``robust_flags`` are ``0.``/``1.`` floats so that
    ``robust_flags.mean()`` is the robust accuracy (``torch`` refuses to average booleans).
    """

    @property
    def robust_flags(self) -> Optional[torch.Tensor]:
        flags = self._robust_flags
        return None if flags is None else flags.float()

    @robust_flags.setter
    def robust_flags(self, robust_flags: torch.Tensor) -> None:
        self._robust_flags = robust_flags.bool()
        self.to_disk(force=True)


def _benchmark_file(name: str, path: Any, what: str, example: str) -> Path:
    """``benchmark()``'s ``aa_state_path`` or ``log_path`` as a ``Path`` to a file whose folder exists (created if
    needed) and is writable (see :func:`robust_mix._compat.check_benchmark_arguments`); ``what`` and ``example`` word the message."""
    from robust_mix.validate import InvalidInputError, check_path, check_writable_dir

    path = check_path(name, path, "a file path")
    if path.is_dir():
        raise InvalidInputError(f"{name} {str(path)!r} is a folder; name the {what} in it, e.g. "
                                f"{name}={str(path / example)!r} (nothing has been computed yet)")
    check_writable_dir(path.parent, f"folder of {name}")
    return path


def _check_benchmark_mode(model: Any, call: str = "benchmark()") -> None:
    """Refuse a model whose BatchNorm layers are in training mode (see :func:`robust_mix._compat.check_benchmark_arguments`); the
    message names ``call``, the RobustBench function it was given to."""
    import torch

    from robust_mix.validate import InvalidInputError

    if not isinstance(model, torch.nn.Module):
        return
    training = [name or type(model).__name__ for name, module in model.named_modules()
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training]
    if training:
        raise InvalidInputError(f"the model is in training mode ({len(training)} BatchNorm layer(s) such as "
                                f"{training[0]!r}): its predictions would depend on the batch and each forward pass "
                                f"would change its running statistics; call model.eval() before {call}")
