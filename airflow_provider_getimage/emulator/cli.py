"""``getimage-emulator``: run the emulator as a process, for the demo and for out-of-process tests."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from airflow_provider_getimage.emulator.config import DEFAULT_API_KEY, IMAGE_FORMATS, EmulatorConfig

log = logging.getLogger("airflow_provider_getimage.emulator")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the empty ones that would only print ``(default: None)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`EmulatorConfig` knob, plus process-level options."""
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="getimage-emulator",
        description="Local stand-in for the GetImage.io API (https://api.getimage.io), faults included.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help=f"accepted API key, repeatable (default: {DEFAULT_API_KEY})",
    )
    parser.add_argument("--latency", type=float, default=defaults.latency, help="seconds per generation")
    parser.add_argument(
        "--latency-jitter", type=float, default=defaults.latency_jitter, help="uniform +/- seconds on latency"
    )
    parser.add_argument(
        "--failure-rate", type=float, default=defaults.failure_rate, help="share of diffusions ending FAILED"
    )
    parser.add_argument(
        "--fail-prompt",
        dest="failing_prompts",
        action="append",
        default=[],
        metavar="TEXT",
        help="prompts containing TEXT (case-insensitive) end FAILED; repeatable",
    )
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="max /v1 requests per second before answering 429"
    )
    parser.add_argument(
        "--retry-after", type=float, default=defaults.retry_after, help="Retry-After seconds sent with 429"
    )
    parser.add_argument(
        "--error-rate", type=float, default=defaults.error_rate, help="share of /v1 requests answered 5xx"
    )
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=defaults.drop_rate,
        help="share of /v1 requests whose connection drops",
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a freshly minted certificate")
    parser.add_argument("--cert-dir", default=None, help="where to write the TLS files (default: a temp dir)")
    parser.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default=defaults.image_format,
        help="shape of `images` entries",
    )
    parser.add_argument(
        "--images-per-diffusion", type=int, default=defaults.images_per_diffusion, help="images per diffusion"
    )
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="PNG width and height")
    parser.add_argument("--seed", type=int, default=None, help="seed for every random decision")
    parser.add_argument("--ready-file", default=None, help="write the base URL to this file once listening")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG logs every request",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Map parsed flags onto :class:`EmulatorConfig`, which validates them."""
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys or (DEFAULT_API_KEY,)),
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        failure_rate=args.failure_rate,
        failing_prompts=tuple(args.failing_prompts),
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        tls=args.tls,
        cert_dir=args.cert_dir,
        image_format=args.image_format,
        images_per_diffusion=args.images_per_diffusion,
        image_size=args.image_size,
        seed=args.seed,
    )


def _write_ready_file(path: str, url: str) -> None:
    """Write the URL atomically, so a script polling for the file never reads half of it."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def serve(config: EmulatorConfig, ready_file: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (exit status 0)."""
    from airflow_provider_getimage.emulator.server import EmulatorState, ServerCore, prepare_tls

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
