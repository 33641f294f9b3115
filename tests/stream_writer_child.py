"""A window that streams a slow scripted answer until its parent kills it (tests/test_ui_paths.py).

Run as ``python tests/stream_writer_child.py MODEL_FILE`` with ENCLAVE_HOME set: it loads MODEL_FILE with the scripted
backend, asks QUESTION, prints ``streaming <conversation id> <message id>`` when the first text arrives and
``finished`` if nobody killed it before the answer ended (then it closes normally).
"""

from __future__ import annotations

import sys

QUESTION = "Tell me a long story, slowly."
REASONING = "A long story."
ANSWER = "".join(f"Sentence {i:03d} of the story. " for i in range(60))  # 1,560 characters
CHUNK_CHARS = 8
DELAY_S = 0.05  # 160 chars a second: the whole answer takes about 10 s


def main(model_path: str) -> int:
    from PySide6.QtWidgets import QApplication

    from enclave.paths import app_paths
    from enclave.settings.settings import Settings, SettingsStore
    from enclave.storage.chats import ChatStore
    from enclave.ui.main_window import MainWindow
    from enclave.workers.engine_worker import EngineController
    from fakes import Script, ScriptedBackend

    app = QApplication([])
    paths = app_paths().ensure()
    store = ChatStore(paths.chats_db)
    backend = ScriptedBackend(Script(reasoning=REASONING, answer=ANSWER, chunk_chars=CHUNK_CHARS, delay_s=DELAY_S))
    controller = EngineController(lambda: backend)
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), Settings())
    window.show()
    announced: list[bool] = []

    def on_loaded(_info: object) -> None:
        if not window.session.busy:
            assert window.session.send(QUESTION)

    def on_text(_request_id: str, _reasoning: str, _content: str) -> None:
        live = window.session.live
        if not announced and live is not None:
            announced.append(True)
            print(f"streaming {live.conversation_id} {live.message_id}", flush=True)

    def on_finished(*_args: object) -> None:
        print("finished", flush=True)
        app.quit()

    controller.modelLoaded.connect(on_loaded)
    controller.textReady.connect(on_text)
    controller.generationFinished.connect(on_finished)
    controller.generationFailed.connect(on_finished)
    window.load_model(model_path)
    code = app.exec()
    window.close()
    store.close()
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
