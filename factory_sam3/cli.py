"""The command line of a data stage, the same for each: ``python stages/<stage>.py [--params FILE] [--no-progress]
[--<path> PATH ...]``. It loads the stage's typed section (``factory_sam3.config``), calls the stage module's
``run(params, ...) -> summary`` and prints ``show(summary)``; a UserError is one ``error: ...`` line, exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from factory_sam3 import config
from factory_sam3.errors import cli_entry


def stage_main(
    stage: str,
    doc: str | None,
    params_cls: type,
    run: Callable[..., Any],
    show: Callable[[Any], None],
    argv: list[str] | None = None,
    paths: Mapping[str, Path] | None = None,
    progress: bool = True,
    on_start: Callable[[], None] | None = None,
) -> None:
    """Parse the arguments, load section ``stage`` as ``params_cls`` and run the stage.

    ``paths`` ({option: default}) become ``--<option>`` arguments passed to ``run`` as keyword Paths;
    ``progress`` adds ``--no-progress`` (passed as ``progress=``); ``on_start`` runs once the arguments parse,
    before the params are read."""

    @cli_entry
    def main() -> None:
        parser = argparse.ArgumentParser(
            prog=f"stages/{stage}.py", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        parser.add_argument("--params", default=str(config.PARAMS_FILE), help="params file (default: %(default)s)")
        for option, default in (paths or {}).items():
            parser.add_argument(f"--{option}", default=str(default), help=f"{option} folder (default: %(default)s)")
        if progress:
            parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        args = parser.parse_args(argv)
        if on_start is not None:
            on_start()
        params = config.load_section(stage, params_cls, args.params)
        kwargs: dict[str, Any] = {option: Path(getattr(args, option)) for option in (paths or {})}
        if progress:
            kwargs["progress"] = not args.no_progress
        show(run(params, **kwargs))

    main()
