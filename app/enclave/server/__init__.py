"""The local API server: OpenAI- and DeepSeek-compatible HTTP endpoints over the app's one model (Qt-free).

``scheduler`` serialises every request onto one engine; ``protocol`` turns JSON bodies into engine requests and engine
events into OpenAI/DeepSeek JSON; ``app`` is the Starlette application; ``service`` runs it under uvicorn.
"""
