"""talkcam's engine: everything but the Qt window, importable without Qt. Layers, lowest first: face / audio
-> motion -> data -> models -> backends -> render -> sinks -> runtime -> eval -> train -> cli
(tests/test_layers.py checks that every import goes down)."""
