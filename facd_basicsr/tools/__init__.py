"""Command-line tools (console scripts ``facd-*``); each module has a ``main(argv=None)``."""
