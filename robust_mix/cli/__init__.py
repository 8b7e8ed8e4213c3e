"""The ``robust-mix`` command line. The CLI owns the terminal: tables, progress bars, plots.

Library modules log and never print; each ``robust_mix/cli/<topic>.py`` wraps one library module
in subcommands registered with :func:`command` and listed in :data:`COMMAND_MODULES`.

Exit codes: 0 done, 1 a file could not be written or read (one ``error:`` line, and how to resume),
2 bad input (one ``error:`` line naming the value), 3 a refused submission, 130 interrupted (Ctrl-C; one line
says how to resume), 141 (128 + SIGPIPE, as a shell reports a command killed by it) when whatever read the standard
output stopped reading (``robust-mix list | head -1``): no traceback, and the resume line of a command that has one.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import shlex
import json
import logging
import os
import select
import signal
import sys
import warnings
from typing import Any, Callable, Optional, Sequence, TextIO

import robust_mix
from robust_mix import threads, validate
from robust_mix.cli import interrupts
from robust_mix.config import ModelConfig
from robust_mix.io import FolderLock
from robust_mix.progress import DISABLE_ENV_VAR

logger = logging.getLogger("robust_mix.cli")

Command = Callable[[argparse.Namespace], int]
EXIT_FILE_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
#: The reader of the standard output went away: the status a shell gives a command that SIGPIPE ended.
EXIT_BROKEN_PIPE = 128 + int(getattr(signal, "SIGPIPE", 13))

#: The help text of every command's NAME argument (resolved by robust_mix.loading.parse_model_name).
NAME_HELP = ("registry name or alias (robust-mix list), hf-hub:org/name, local-dir:PATH (a saved folder), "
             "a ModelConfig .json file or module:function; append ,key=value to override, e.g. "
             "fmnist-robust,alpha=0.9")

# Modules that register subcommands with @command; one line per feature module.
COMMAND_MODULES = [
    "robust_mix.cli.demo",
    "robust_mix.cli.cards",
    "robust_mix.cli.hub",
    "robust_mix.cli.benchmark",
    "robust_mix.cli.certify",
    "robust_mix.cli.train",
    "robust_mix.cli.leaderboard",
]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command, str, Optional[str]]] = {}
# Subcommands that compute: they get --threads, and the thread policy runs before them.
_COMPUTING: set[str] = set()


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            resume: Optional[str] = None, *, computes: bool = False):
    """Register ``run`` as the subcommand ``name``; ``arguments`` adds its options to a parser.

    ``resume`` is the line printed after Ctrl-C (``str.format`` fields: the parsed arguments).
    ``computes=True`` adds ``--threads`` and applies :func:`robust_mix.threads.apply_thread_policy`
    before ``run``.
    """
    def wrap(run: Command) -> Command:
        _COMMANDS[name] = (arguments, run, help, resume)
        if computes:
            _COMPUTING.add(name)
        return run
    return wrap


_HELD: list[FolderLock] = []


def hold_output_folder(out: Any) -> None:
    """Lock the command's ``--out`` until it ends (:class:`robust_mix.io.FolderLock`): a second command writing its
    reports, summary or plot into the same folder is refused instead of mixing them with this one's."""
    _HELD.append(FolderLock(out, "output folder").acquire())


def arg_type(check: Callable[[str, object], object], parse: Optional[Callable[[str, str], object]] = None
             ) -> Callable[[str], object]:
    """An argparse ``type`` from a :mod:`robust_mix.validate` check (``parse`` turns the text into a value first),
    so that the CLI and the library refuse the same values with the same words."""
    def convert(text: str) -> object:
        try:
            return check("value", parse("value", text) if parse is not None else text)
        except validate.InvalidInputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = check.__name__
    return convert


def PATH(text: str) -> str:  # noqa: N802 (an argparse type, named as the others)
    """A file or folder argument with a leading ``~`` read as the home folder, as a shell reads it: ``--out=~/x``
    and ``--out ~user/x`` in quotes reach the program unexpanded, and would make a folder named ``~``."""
    return os.path.expanduser(text)


#: argparse types shared by the subcommands.
POSITIVE_INT = arg_type(validate.positive_int, validate.parse_int)
SEED = arg_type(validate.check_seed, validate.parse_int)


def THREADS(text: str) -> int:  # noqa: N802 (an argparse type, named as the others)
    """``--threads``: :func:`robust_mix.threads.check_threads`, the rule ``$ROBUST_MIX_THREADS`` follows too."""
    try:
        return threads.check_threads(text, "value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def MODEL_NAME(text: str) -> str:  # noqa: N802 (an argparse type, named as the others)
    """A model NAME for :func:`robust_mix.load_model` (:func:`robust_mix.loading.parse_model_name`): an unknown or
    malformed name, or a registered one with a bad override (``fmnist-robust,alpha=2``), is an argument error (naming
    the closest registered names), not a traceback from deep inside a run."""
    from robust_mix.loading import model_config_of, parse_model_name

    try:
        if parse_model_name(text).kind == "registry":
            model_config_of(text).validate()  # its overrides checked too (alpha=2), without building the model
    except KeyError as err:  # a KeyError's str() wraps its message in quotes
        raise argparse.ArgumentTypeError(str(err.args[0])) from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def REGISTERED_NAME(text: str) -> str:  # noqa: N802 (an argparse type, named as the others)
    """A registered entry's name or alias (:func:`robust_mix.get_model_config`), as :data:`MODEL_NAME` refuses
    what is not one."""
    try:
        robust_mix.get_model_config(text)
    except KeyError as err:
        raise argparse.ArgumentTypeError(str(err.args[0])) from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def refuse_owned_options(parser: argparse.ArgumentParser, passed: Sequence[str], owned: Sequence[str]) -> None:
    """Exit with an argument error when ``passed`` (arguments a script hands on to a ``robust-mix`` command) sets one
    of the ``owned`` options the script sets itself: the later one would win, so runs the script labels alike (one
    process, the same N) would differ, and the times or flags it compares would be of different runs."""
    given = sorted({item.split("=", 1)[0] for item in passed if item.split("=", 1)[0] in owned})
    if given:
        parser.error(f"{', '.join(given)} after -- would override what this script sets for every run it compares; "
                     "use the script's own option instead (see --help)")


#: Help texts of the options several commands share; they say the units.
EPS_HELP = ("perturbation budget on the [0, 1] pixel scale (images lie in [0, 1]): 8/255 or 0.0314, not 8; under "
            "L2 and L1 a distance on the same scale, e.g. 0.5")
SEED_HELP = "random seed: a whole number from 0 to 2**64 - 1 (default 0)"
DATA_DIR_HELP = ("data set root: a folder of Fashion-MNIST's four *-ubyte.gz files (default: $ROBUST_MIX_DATA, then "
                 "Debian's /usr/share/datasets/fashion-mnist), the folder holding CIFAR's cifar-10-batches-py/ or "
                 "cifar-100-python/, or ImageNet's holding val/<wnid>/<file>.JPEG")

#: Bar width on a terminal that reports no width (tqdm would draw nothing at all there).
FALLBACK_BAR_COLUMNS = 100


def bar_width(file: Optional[TextIO] = None) -> dict[str, Any]:
    """tqdm's width options for bars drawn on ``file`` (default ``sys.stderr``): follow the terminal's width,
    or a fixed :data:`FALLBACK_BAR_COLUMNS` where it reports 0 columns (a pseudo-terminal whose size was
    never set, as some container and CI runners allocate), on which tqdm would otherwise draw empty bars."""
    file = sys.stderr if file is None else file
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a terminal: tqdm's own choice applies
        return {"dynamic_ncols": True}
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": FALLBACK_BAR_COLUMNS}


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    """``--no-progress``, on every command that draws progress bars (read with :func:`progress_requested`)."""
    p.add_argument("--no-progress", action="store_true",
                   help="draw no progress bars (they are drawn only when the standard error is a terminal, and "
                        f"never with ${DISABLE_ENV_VAR} set); the log lines stay")


def progress_requested(args: argparse.Namespace) -> bool:
    """Whether the command line asks for bars (no ``--no-progress``); whether they are drawn is
    :func:`robust_mix.progress.show_bars`'s to say (a terminal, no ``$TQDM_DISABLE``)."""
    return not getattr(args, "no_progress", False)


class LogAboveBars:
    """Until exit, replaces the root logger's console handlers with one that writes through ``tqdm.write`` on
    ``file`` (above the bars drawn there, which a plain handler would write into) and turns Python warnings into
    log records. ``quiet``: only WARNING and above (everything when the root logger is at DEBUG, ``-v``), for
    bars that say what the INFO lines would; otherwise the console handler's own level."""

    def __init__(self, file: TextIO, quiet: bool = True) -> None:
        self.file, self.quiet = file, quiet
        self._saved: list[logging.Handler] = []
        self._captured = False

    def __enter__(self) -> "LogAboveBars":
        root = logging.getLogger()
        self._saved = root.handlers[:]
        consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                    and getattr(h, "stream", None) in (sys.stdout, sys.stderr, self.file)]
        handler = _TqdmHandler(self.file)
        if self.quiet:
            handler.setLevel(logging.DEBUG if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING)
        elif consoles:
            handler.setLevel(consoles[0].level)
        if consoles:
            handler.setFormatter(consoles[0].formatter)
        root.handlers[:] = [h for h in root.handlers if h not in consoles] + [handler]
        shown = warnings.showwarning
        logging.captureWarnings(True)
        self._captured = warnings.showwarning is not shown  # False: they were captured already
        return self

    def __exit__(self, *exc: object) -> None:
        if self._captured:
            logging.captureWarnings(False)
        logging.getLogger().handlers[:] = self._saved


class _TqdmHandler(logging.Handler):
    def __init__(self, file: TextIO) -> None:
        super().__init__()
        self.file = file

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record).rstrip(), file=self.file)  # a warning ends in a newline
        except Exception:  # logging must never break the run
            self.handleError(record)


POSITIVE_FLOAT = arg_type(validate.positive_float, validate.parse_number)
NON_NEGATIVE_FLOAT = arg_type(validate.non_negative_float, validate.parse_number)
EPS = arg_type(lambda name, text: validate.parse_eps(text))


def one_line(value: object) -> str:
    """``value`` as text for one terminal line: line breaks, tabs and other control characters written as escapes
    (``\\n``, ``\\x1b``), so a name read from a file (a folder name, a report's model) cannot break a table row
    or send the terminal an escape sequence."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in str(value))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns, one line per row (cells through :func:`one_line`)."""
    cells = [[one_line(h) for h in headers]] + [["" if c is None else one_line(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def _base_models(config: ModelConfig) -> str:
    refs = [b.ref for b in (config.standard, config.robust) if b is not None]
    return ", ".join(refs) if refs else "(given at load time)"


def _summary_row(config: ModelConfig) -> list[object]:
    rep = config.reported
    return [config.name, config.dataset, config.threat_model,
            f"{rep.clean_acc:.2f}" if rep else "-", f"{rep.autoattack_acc:.2f}" if rep else "-",
            _base_models(config)]


_SUMMARY_HEADERS = ["name", "dataset", "threat", "clean %", "AutoAttack %", "base models"]


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'cifar100-*'")


@command("list", "list registered models (wildcards allowed)", _list_args)
def _list(args: argparse.Namespace) -> int:
    names = robust_mix.list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print(format_table(_SUMMARY_HEADERS, [_summary_row(robust_mix.get_model_config(n)) for n in names]))
    return 0


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--json", action="store_true", help="print the full config as JSON")


@command("info", "show one model's config", _info_args)
def _info(args: argparse.Namespace) -> int:
    config = robust_mix.loading.model_config_of(args.name)
    if config is None:
        raise ValueError(f"{args.name} is a function returning a model; it has no config to show")
    config.validate()  # overrides in the name are checked as load_model checks them, not shown as if valid
    if args.json:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    print(format_table(_SUMMARY_HEADERS, [_summary_row(config)]))
    ratio = "adaptive" if config.alpha is None else config.alpha
    print(f"\nalpha: {ratio}   mixing: {config.mixing}   temperatures: std {config.std_scale}, "
          f"rob {config.rob_scale}")
    if config.policy is not None:
        print(f"policy: alpha range {config.policy.alpha_range}, gamma scale/bias "
              f"{config.policy.gamma_scale}/{config.policy.gamma_bias}")
    for text in (config.description, config.paper, config.citation):
        if text:
            print(f"\n{text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`COMMAND_MODULES` (imported here, so that the parser is
    whole wherever it is built: the tests parse the command lines the docs show with it)."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="robust-mix", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {robust_mix.__version__}",
                        help="print the installed robust_mix version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text, _resume) in _COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_args(command_parser)
        if name in _COMPUTING:
            command_parser.add_argument(
                "--threads", type=THREADS, default=None,
                help=f"CPU threads per process, 1 to {threads.MAX_THREADS} (default: ${threads.ENV_VAR}, else "
                     "$OMP_NUM_THREADS, else usable CPUs divided by the processes sharing them; see "
                     "robust_mix.threads)")
    return parser


def _reader_gone(stream: Optional[TextIO]) -> bool:
    """Whether the reader of ``stream`` (the standard output or error) has gone, as when the pipe to ``head`` closed:
    its buffered text cannot be written, or the operating system reports its far end shut. A ``BrokenPipeError``
    from anywhere else (a socket, a worker's pipe) is not one."""
    if stream is None:
        return False
    try:
        stream.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError, AttributeError):
        return False
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or a stream without a descriptor
        return False


def _drop(stream: Optional[TextIO]) -> None:
    """Point ``stream``'s descriptor at the null device, so that the interpreter's last flush of the text still
    buffered for a reader that has gone does not print ``Exception ignored ... BrokenPipeError`` and exit with 120."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor: nothing is flushed at exit
        return
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``robust-mix`` console script.

    Returns the exit code (see the module's docstring); the standard output is flushed before it returns, so a
    reader that stopped reading early ends the command with :data:`EXIT_BROKEN_PIPE`, not a traceback.
    """
    try:
        code = _main(argv)
        if sys.stdout is not None:  # None when the command was started with its output closed (>&-)
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise
        _drop(sys.stdout)
        if _RESUME and not _reader_gone(sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                print(f"output closed: {_RESUME[-1]()}", file=sys.stderr, flush=True)
        if _reader_gone(sys.stderr):  # the same closed pipe (robust-mix ... |& head -1)
            _drop(sys.stderr)
        return EXIT_BROKEN_PIPE
    finally:
        _RESUME.clear()


# The running command's resume line, for main() to print when its output closes (set once the arguments parse).
_RESUME: list[Callable[[], str]] = []


def _main(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage line and the error (or the help)
        return exit.code if isinstance(exit.code, int) else EXIT_BAD_INPUT
    args.command_line = "robust-mix " + shlex.join(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _, run, _, resume = _COMMANDS[args.command]
    if resume:
        _RESUME.append(lambda: resume.format(**vars(args)))
    try:
        if args.command in _COMPUTING:
            threads.apply_thread_policy(args.threads)
        with interrupts.catching():
            return run(args)
    except KeyboardInterrupt:
        hint = resume.format(**vars(args)) if resume else "nothing was written"
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # a folder where a file goes, a full disk: after the work, whose state is kept
        if isinstance(err, BrokenPipeError) and _reader_gone(sys.stdout):
            raise  # the reader of the output has gone: main() ends quietly
        print(f"error: {err}" + (f"; {resume.format(**vars(args))}" if resume else ""), file=sys.stderr)
        return EXIT_FILE_ERROR
    finally:
        while _HELD:
            _HELD.pop().release()
        threads.release_claim()
