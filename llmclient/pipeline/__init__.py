"""The batch runner: a prompt template over every row of a dataset, replies appended to a JSON Lines file.

    from llmclient import pipeline

    summary = pipeline.run(
        "local",                                   # a backend, or anything llmclient.load() takes
        "reviews.jsonl",                           # .jsonl, .csv, .parquet, or an iterable of dicts
        template="Is this review positive or negative? {{ text }}",
        output="results.jsonl",
        params={"max_new_tokens": 8, "temperature": 0},
    )
    print(summary)

A rerun with the same output skips rows already done; see :func:`arun` and :class:`RunOptions` for
every option. The results file is in the order rows finished; :func:`read_results` reads it back
one record per row, in input order:

    for record in pipeline.read_results("results.jsonl"):
        print(record["index"], record["status"], record["text"])
"""

from llmclient.pipeline.keys import MissingIdFieldError, row_key, run_fingerprint
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.output import OutputError, ResultsWriteError
from llmclient.pipeline.progress import RunSummary
from llmclient.pipeline.prompt import PromptTemplate, TemplateError
from llmclient.pipeline.readback import read_results
from llmclient.pipeline.results import ResultsFile
from llmclient.pipeline.rows import read_rows
from llmclient.pipeline.runner import arun, arun_with, run, run_with

__all__ = [
    "MissingIdFieldError",
    "OutputError",
    "PromptTemplate",
    "ResultsFile",
    "ResultsWriteError",
    "RunOptions",
    "RunSummary",
    "TemplateError",
    "arun",
    "arun_with",
    "read_results",
    "read_rows",
    "row_key",
    "run",
    "run_fingerprint",
    "run_with",
]
