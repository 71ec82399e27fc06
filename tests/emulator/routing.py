"""Which operation a request is for: every method and path of the spec (``klaviyo_schemas.json``,
``spec_operations``), whether the emulator serves it or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .schemas import Operation, compile_path


@dataclass(frozen=True)
class Route:
    operation_id: str
    method: str
    path: str  # as the spec writes it, e.g. /api/lists/{id}
    operation: Operation | None  # None: in the spec, not emulated
    regex: re.Pattern[str] = field(compare=False)


@dataclass(frozen=True)
class Routed:
    route: Route
    params: dict[str, str]


class Router:
    def __init__(
        self, served: dict[str, Operation], spec_routes: dict[str, tuple[str, str]]
    ) -> None:
        # Grouped by the path's first two segments (/api/profiles), which no spec path templates.
        self._groups: dict[str, list[Route]] = {}
        for op_id, (method, path) in spec_routes.items():
            operation = served.get(op_id)
            if operation is not None and (operation.method, operation.path) != (method, path):
                raise ValueError(f"{op_id}: served as {operation.method} {operation.path}")
            route = Route(op_id, method, path, operation, compile_path(path))
            self._groups.setdefault(_group(path), []).append(route)
        missing = set(served) - set(spec_routes)
        if missing:
            raise ValueError(f"served operations missing from the spec: {sorted(missing)}")

    def resolve(self, method: str, path: str) -> Routed | str:
        """The route for ``method`` and ``path``, else "method" (the path exists in the spec
        with other methods) or "path" (no such path in the spec)."""
        path_found = False
        for route in self._groups.get(_group(path), ()):
            match = route.regex.match(path)
            if match is None:
                continue
            path_found = True
            if route.method == method:
                # Path parameters as sent percent-encoded (catalog ids hold "$" and ":").
                params = {name: unquote(value) for name, value in match.groupdict().items()}
                return Routed(route, params)
        return "method" if path_found else "path"


def _group(path: str) -> str:
    return "/".join(path.split("/", 3)[:3])
