"""Unknown query parameters are refused on the native API (a 400 naming them), never ignored.

A typo in a filter (`?min_free_gpus=2` for `min_gpus`) would otherwise answer 200 with everything,
as if the filter had matched. The rule is one app-wide dependency; each route's accepted names
come from the parameters its endpoint and its dependencies declare (FastAPI's dependant), so a
new route is covered without a list to keep in step. GA4GH TES routes are exempt: they tolerate
unknown parameters, as TES clients written for other servers expect (docs/tes.md).
"""

from __future__ import annotations

import difflib

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from cpnet.api.errors import TES_PREFIX
from cpnet.errors import Invalid

_ATTR = "_cpnet_query_params"


def _names(dependant: Dependant) -> set[str]:
    """The query parameter names a dependant reads, through its sub-dependencies."""
    out: set[str] = set()
    for field in dependant.query_params:
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):  # a model of query params
            out.update(f.alias or name for name, f in model.model_fields.items())
        else:
            out.add(field.alias)
    for sub in dependant.dependencies:
        out |= _names(sub)
    return out


def accepted(route: APIRoute) -> tuple[str, ...]:
    """The route's query parameter names, sorted (computed once per route, kept on it)."""
    names = getattr(route, _ATTR, None)
    if names is None:
        names = tuple(sorted(_names(route.dependant)))
        setattr(route, _ATTR, names)
    return names


def unknown_message(method: str, path: str, unknown: list[str], known: tuple[str, ...]) -> str:
    names = ", ".join(repr(u) for u in unknown)
    what = "parameter" if len(unknown) == 1 else "parameters"
    msg = f"unknown query {what} {names} for {method} {path}; "
    msg += f"accepted: {', '.join(known)}" if known else "it takes no query parameters"
    close = difflib.get_close_matches(unknown[0], known, n=1)
    if close:
        msg += f"; did you mean {close[0]}?"
    return msg


async def only_known(request: Request) -> None:
    """App-wide dependency: 400 `unknown_parameter` naming the first unknown query parameter."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or request.url.path.startswith(TES_PREFIX):
        return
    known = accepted(route)
    unknown = list(dict.fromkeys(k for k in request.query_params if k not in known))
    if unknown:
        raise Invalid(
            unknown_message(request.method, route.path, unknown, known),
            field=unknown[0],
            code="unknown_parameter",
            accepted=list(known),
        )
