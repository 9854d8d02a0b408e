"""Where ``import_jsonl`` and ``ImportSummary`` were imported from before the importers' shared
pieces and the JSON-lines importer got modules of their own (``import_summary``, ``compression``,
``jsonl``). ``cli.py``, ``tests/bench/test_world2.py`` and ``docs/logs.md`` still name this module;
delete it once they import from :mod:`bidfilter.logs` instead.
"""

from bidfilter.logs.import_summary import ImportSummary
from bidfilter.logs.jsonl import import_jsonl

__all__ = ["ImportSummary", "import_jsonl"]
