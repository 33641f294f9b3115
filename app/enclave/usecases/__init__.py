"""Qt-free use cases: the small verbs the GUI, the CLI and any later server share, so none of them re-implements
(and drifts from) the others."""
