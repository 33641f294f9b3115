"""Inference engine: Qt-free. Loads one GGUF model and streams chat replies."""
