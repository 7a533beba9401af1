"""Evaluation: metrics on rendered frames re-measured with a face mesh (lip sync, closure, identity,
stability), lip sync against held-out real speakers (`realsync`), mouth realism (`realism`), the latency
trade-off (`latency`), long-run drift, and the benchmarks (`bench`, `callbench`, `gpu_check`)."""
