"""Entry points: the command line (and, later, HTTP). They parse, call the engine, and print."""
