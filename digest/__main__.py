"""``python -m digest`` and the ``digest`` console script (:func:`run`).

The CLI is imported only when it runs: a render worker (``spawn``) runs the main script or
module again as ``__mp_main__``, and must not load the CLI's libraries (typer, rich, httpx…).
The console script that pip writes imports :func:`run` from here (cheap) at its top level.
"""


def run() -> None:
    """Console-script entry point (``digest``): :func:`digest.cli.main`."""
    from digest.cli import main

    main()


if __name__ == "__main__":
    run()
