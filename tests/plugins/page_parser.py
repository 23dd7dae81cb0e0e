"""Read an HTML page back as a browser's tokeniser sees it (the gallery tests share this)."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """The page as a browser's tokeniser sees it: tags with their attributes, and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_style = False
        self._in_script = False
        self.style = ""
        self.script = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        elif self._in_script:
            self.script += data
        else:
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def record_links(self) -> list[dict[str, str | None]]:
        """The links to images (not the page's own navigation to the UI and the other pages)."""
        return [attrs for attrs in self.all("a") if attrs.get("target") == "_blank"]

    @property
    def visible(self) -> str:
        return "".join(self.text)
