"""The command line, the one owner of every `mosnas` command: the parser and dispatch (main.py), option helpers
(args.py), and one module per group of commands (model.py: export/finetune/translate/evaluate; latency.py:
latency/search; glue.py, config.py, report.py, autodistil.py, study.py). Nothing in mosnas imports it."""
