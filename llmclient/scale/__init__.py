"""The batch runner beyond one process: the same run (templates, row keys, result lines, resume) on Ray.

    from llmclient.scale import ray as ray_engine

    summary = ray_engine.run("hf:smollm2", "reviews.jsonl", template="Summarise: {{ text }}",
                             output="results/", actors=4, resources={"num_gpus": 1})

- :mod:`~llmclient.scale.ray`: :func:`~llmclient.scale.ray.run`, the run on a Ray cluster (Ray Data
  ``map_batches`` over an actor pool, one backend per actor); needs ``pip install 'llmclient[ray]'``.
- :mod:`~llmclient.scale.shards`: the output folder of JSONL shards, one per writer: creating and
  locking a shard, reading back what is done, reading the results.
- :mod:`~llmclient.scale.actor`: what one actor does with a batch of planned rows.

Importing this package imports nothing heavy; only :mod:`~llmclient.scale.ray` imports Ray.
"""
