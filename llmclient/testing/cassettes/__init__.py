"""Cassette internals, one idea per module, shared by the backend-level and the VCR-level cassettes.

- :mod:`~llmclient.testing.cassettes.index`: :class:`ReplayIndex`, the one replay index (plays, the
  repeat rule, unused entries, the closest entry to a miss) both levels keep their entries in.
- :mod:`~llmclient.testing.cassettes.chat`: :class:`Cassette`, the backend-level (chat) cassette.
- :mod:`~llmclient.testing.cassettes.entries`: :class:`Interaction` and how requests, replies,
  streams and refusals are written in a chat cassette.
- :mod:`~llmclient.testing.cassettes.vcr`: :class:`CassetteTransport`, raw HTTP record and replay in
  VCR.py's format at the httpx2 transport seam (imports httpx2).
- :mod:`~llmclient.testing.cassettes.exchanges`: the VCR.py format: reading and checking its
  document, and the request properties a VCR cassette matches on (imports httpx2).
- :mod:`~llmclient.testing.cassettes.matching`: the stable key of a request and the differences a miss
  reports.
- :mod:`~llmclient.testing.cassettes.modes`: :data:`RecordMode` and what each mode records.
- :mod:`~llmclient.testing.cassettes.scrubbing`: secret scrubbing: key-looking strings, secret
  headers and query parameters by name, a backend's credentials by value.
- :mod:`~llmclient.testing.cassettes.blobs`: large ``data:`` URLs (images) kept beside the cassette
  in files named by content hash, the YAML holding references, on both levels.
- :mod:`~llmclient.testing.cassettes.files`: the file under a cassette: YAML (strings YAML cannot
  hold as ``!json``), atomic writes with the umask's permissions, a lock, merge on save.

Nothing here imports the loopback server (:mod:`llmclient.testing.server`) or a backend.
"""
