"""``getimage-emulator``: run the emulator as a process, for the demo and for out-of-process tests."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from airflow_provider_getimage.emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("airflow_provider_getimage.emulator")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the empty ones that would only print ``(default: None)``.

    A repeatable knob's tuple default prints as its items (``emulator-key``), not as a tuple.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == () or default == []:
            return action.help
        if isinstance(default, tuple):
            shown = ", ".join(default).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


class _Repeat(argparse.Action):
    """``append`` that replaces the default on first use; argparse's own appends to it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given = getattr(namespace, self.dest)
        items = [] if given is self.default else list(given)
        items.append(values)
        setattr(namespace, self.dest, items)


def _flag_options(spec: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords for one :class:`EmulatorConfig` field, from its type and metadata.

    :raises TypeError: for a field with no help or of a type no flag shape fits, so a new knob
        fails loudly here rather than as a flag that does the wrong thing.
    """
    if not spec.metadata.get("help"):
        raise TypeError(f"knob {spec.name!r} has no help: give its field metadata=knob('...')")
    options: dict[str, Any] = {
        "dest": spec.name,
        "default": spec.metadata.get("cli_default", spec.default),
        "help": spec.metadata["help"],
    }
    if "metavar" in spec.metadata:
        options["metavar"] = spec.metadata["metavar"]
    if get_origin(hint) in (Union, types.UnionType):  # ``X | None``: the flag takes an X
        (hint,) = (arg for arg in get_args(hint) if arg is not type(None))
    if hint is bool and options["default"] is False:
        options["action"] = "store_true"
    elif get_origin(hint) is tuple and get_args(hint) == (str, ...):
        options["action"] = _Repeat
    elif get_origin(hint) is Literal:
        options["choices"] = get_args(hint)
    elif hint in (int, float, str):
        options["type"] = hint
    else:
        raise TypeError(f"no command-line flag shape for knob {spec.name!r} of type {hint!r}")
    return options


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`EmulatorConfig` field, made from its metadata, plus process-level options."""
    parser = argparse.ArgumentParser(
        prog="getimage-emulator",
        description="Local stand-in for the GetImage.io API (https://api.getimage.io), faults included.",
        formatter_class=_HelpFormatter,
    )
    hints = get_type_hints(EmulatorConfig)
    for spec in dataclasses.fields(EmulatorConfig):
        flag = spec.metadata.get("flag", "--" + spec.name.replace("_", "-"))
        parser.add_argument(flag, **_flag_options(spec, hints[spec.name]))
    parser.add_argument("--ready-file", default=None, help="write the base URL to this file once listening")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG logs every request",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Hand the parsed knob flags to :class:`EmulatorConfig`, which validates them."""
    return EmulatorConfig(**{name: getattr(args, name) for name in EmulatorConfig.knob_names()})


def _write_ready_file(path: str, url: str) -> None:
    """Write the URL atomically, so a script polling for the file never reads half of it."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def serve(config: EmulatorConfig, ready_file: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (exit status 0)."""
    from airflow_provider_getimage.emulator.runner import ServerCore, prepare_tls
    from airflow_provider_getimage.emulator.state import EmulatorState

    tls_files, temp_dir = prepare_tls(config)
    core = ServerCore(EmulatorState(config), tls_files)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            loop.add_signal_handler(signum, stop.set)
    try:
        url = await core.start()
        print(f"GetImage.io emulator listening on {url}", flush=True)
        if tls_files is not None:
            print(f"CA bundle: {tls_files.ca_bundle}", flush=True)
        if ready_file:
            await asyncio.to_thread(_write_ready_file, ready_file, url)
        await stop.wait()
        log.info("Shutting down")
    finally:
        await core.stop()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``getimage-emulator`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config, args.ready_file))
    except KeyboardInterrupt:  # pragma: no cover - only where signal handlers are unsupported
        pass
    except OSError as exc:
        print(f"getimage-emulator: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
