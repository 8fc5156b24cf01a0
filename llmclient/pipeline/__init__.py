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

A rerun with the same output skips rows already done; see :func:`arun` for every option.
"""

from llmclient.pipeline.progress import RunSummary
from llmclient.pipeline.prompt import PromptTemplate, TemplateError
from llmclient.pipeline.results import ResultsFile
from llmclient.pipeline.rows import read_rows
from llmclient.pipeline.runner import arun, row_key, run, run_fingerprint

__all__ = [
    "PromptTemplate",
    "ResultsFile",
    "RunSummary",
    "TemplateError",
    "arun",
    "read_rows",
    "row_key",
    "run",
    "run_fingerprint",
]
