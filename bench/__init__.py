"""Benchmarks, apart from the package (STYLE.md: "benchmarks apart in bench/").

``python -m bench`` (or ``bench/run.sh``) measures bidfilter's fast path against what a user
would pick instead, on one core each, with one harness and one workload; see ``__main__``.
``bench/train_scale.sh`` measures training at scale.
"""
