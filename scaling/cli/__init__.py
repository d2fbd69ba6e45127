"""The `mcscale` command line: thin wrappers that parse, call the library and print.

`app` assembles the command modules (one per command group); each module imports only
`common`, so nothing here imports in a circle: app -> {study, submit, train, ...} -> common.
This package's `__init__` imports nothing, so importing one command module stays cheap.
"""
