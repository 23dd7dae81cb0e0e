"""``python -m airflow_provider_getimage.emulator``: same as the ``getimage-emulator`` command."""

from __future__ import annotations

from airflow_provider_getimage.emulator.cli import main

if __name__ == "__main__":
    main()
