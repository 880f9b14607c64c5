"""``python -m digest``: same as the ``digest`` console script.

The CLI is imported under the ``__main__`` guard: a render worker (``spawn``) imports this
module again as ``__mp_main__``, and must not load the CLI's libraries (typer, rich, httpx…).
"""

if __name__ == "__main__":
    from digest.cli import main

    main()
