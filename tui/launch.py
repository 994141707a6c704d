"""Start `llmedge chat`: pick the model, build the client for the mode asked, run the app."""

from __future__ import annotations

from llmedge import Engine, ModelNotFoundError, Settings, Store, ensure_model
from tui.app import ChatApp
from tui.client import ChatClient
from tui.local import LocalClient
from tui.remote import RemoteClient, pick_model


def no_model_hint(store: Store, default: str) -> str:
    """What to tell someone whose store lacks the model they asked for."""
    stored = [m.ref for m in store.manifests()]
    if not stored:
        return (
            f"no model is stored yet; run `llmedge pull {default}` (the default model, no "
            "network needed) or `llmedge pull ./FILE.gguf`, then `llmedge chat` again"
        )
    return f"stored models: {', '.join(stored)}; run `llmedge pull NAME` to add another"


def local_model(settings: Settings, store: Store, name: str | None) -> str:
    """The stored model `name` means (the default when None); the embedded default is imported."""
    target = name or settings.default_model
    try:
        return ensure_model(store, target).ref
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(target, no_model_hint(store, settings.default_model)) from exc


def build_app(
    settings: Settings, name: str | None, url: str | None, api_key: str | None
) -> ChatApp:
    """The chat app for one mode: in-process when `url` is None, else against that server."""
    client: ChatClient
    if url is None:
        store = Store(settings.store_dir)
        model = local_model(settings, store, name)
        client = LocalClient(Engine(settings, store))
    else:
        remote = RemoteClient(url, api_key)
        model = pick_model(name, remote.models_now(), remote.base)
        client = remote
    return ChatApp(client, model, settings.home)


def run_chat(
    settings: Settings, name: str | None = None, url: str | None = None, api_key: str | None = None
) -> None:
    """Run the chat in this terminal until the user quits."""
    build_app(settings, name, url, api_key).run()
