"""Names a plan writes, turned into what one libcloud driver's create_node expects.

A plan names images, sizes, locations, networks, subnets, security groups and key pairs by id or
by name; drivers want different things for them: OpenStack takes `networks` as network objects,
EC2 takes `ex_security_groups` as plain names and `ex_subnet` as a subnet object, Azure takes
`ex_network` as a name. Each value is looked up through the driver's own list call (so a typo
is reported with a "did you mean", before anything is created) and handed on in the form the
driver's create_node documents for that argument: an object where its docstring names a class,
else the id for `*_ids` arguments, else the name. Arguments no list call knows pass unchanged.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from launchplan.errors import ProviderError
from launchplan.suggest import did_you_mean

Call = Callable[[str, Callable[[], Any]], Any]

# create_node argument -> (what it names, the driver's list calls that know its values).
LOOKUPS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "networks": ("network", ("ex_list_networks", "list_networks")),
    "ex_network": ("network", ("ex_list_networks", "list_networks")),
    "ex_networks": ("network", ("ex_list_networks", "list_networks")),
    "ex_subnet": ("subnet", ("ex_list_subnets",)),
    "ex_subnetwork": ("subnet", ("ex_list_subnetworks",)),
    "ex_security_groups": ("security group", ("ex_list_security_groups",
                                              "ex_get_security_groups")),
    "ex_securitygroup": ("security group", ("ex_list_security_groups",
                                            "ex_get_security_groups")),
    "ex_security_group_ids": ("security group", ("ex_get_security_groups",
                                                 "ex_list_security_groups")),
    "ex_keyname": ("key pair", ("list_key_pairs",)),
    "ex_key_name": ("key pair", ("list_key_pairs",)),
}
# create_node arguments cei fills itself from the plan's own keys.
OWN_ARGS = frozenset({"name", "image", "size", "location", "ex_userdata", "ex_clienttoken"})


def takes_objects(function: Callable[..., Any], argument: str) -> bool:
    """Whether `function`'s docstring types `argument` as a class (":class:`...`")."""
    doc = inspect.getdoc(function) or ""
    field_end = r"\n\s*:(?:param|keyword|type|rtype|return)\b|\n\s*\n|\Z"
    match = re.search(rf":type\s+{re.escape(argument)}\s*:(.*?)(?={field_end})", doc, re.DOTALL)
    return match is not None and ":class:" in match.group(1)


def _bare(function: Any) -> bool:
    """Whether `function` is a method callable without arguments."""
    if not callable(function):
        return False
    parameters = inspect.signature(function).parameters.values()
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in parameters)


def _ident(item: Any) -> tuple[str, str]:
    """(id, name) of a listed thing; drivers list some things as bare names."""
    if isinstance(item, str):
        return item, item
    name = str(getattr(item, "name", "") or "")
    return str(getattr(item, "id", None) or name), name


def pick(items: Sequence[Any], wanted: str, what: str, label: str, complete: bool = True) -> Any:
    """The listed thing whose id is `wanted`, else the one so named; ProviderError naming
    the nearest known names (of a `complete` listing) when there is none, or when a name is
    ambiguous."""
    for item in items:
        if _ident(item)[0] == wanted:
            return item
    named = [item for item in items if _ident(item)[1] == wanted]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(_ident(item)[0] for item in named)
        raise ProviderError(f"{label}: {len(named)} {what}s are named {wanted!r}; give one "
                            f"by id ({ids})", transient=False)
    names = sorted({part for item in items for part in _ident(item) if part})
    hint = did_you_mean(wanted, names)
    short = complete and not hint and len(names) <= 20
    known = f" (known: {', '.join(names) or 'none'})" if short else ""
    raise ProviderError(f"{label}: no {what} {wanted!r} by id or name{hint}{known}",
                        transient=False)


class Names:
    """Resolves a plan's names against one driver instance; `call(what, fn)` runs a driver
    call with the provider's retries and error translation."""

    def __init__(self, compute: Any, call: Call, label: str) -> None:
        self.compute = compute
        self.call = call
        self.label = label

    def image(self, wanted: str) -> Any:
        """The image with this id (asked directly where the driver can), else this name."""
        compute = self.compute
        answer = ""
        try:
            image = self.call(f"{self.label}: looking up image {wanted} by id",
                              lambda: compute.get_image(wanted))
        except ProviderError as exc:
            if exc.transient:
                raise
            image, answer = None, f" ({str(exc).removeprefix(self.label + ': ')})"
        if image is not None and str(image.id) == wanted:
            return image
        listing = compute.list_images
        filtered = "ex_filters" in inspect.signature(listing).parameters
        if filtered:  # EC2 and its kin: never list every public image
            images = self.call(f"{self.label}: listing images named {wanted}",
                               lambda: listing(ex_filters={"name": wanted}))
        else:
            images = self.call(f"{self.label}: listing images", listing)
        try:
            return pick(images, wanted, "image", self.label, complete=not filtered)
        except ProviderError as exc:
            raise ProviderError(f"{exc}{answer}", transient=False) from None

    def size(self, wanted: str) -> Any:
        sizes = self.call(f"{self.label}: listing sizes", self.compute.list_sizes)
        return pick(sizes, wanted, "size", self.label)

    def location(self, wanted: str) -> Any:
        locations = self.call(f"{self.label}: listing locations", self.compute.list_locations)
        return pick(locations, wanted, "location", self.label)

    def create_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Every `create_args` entry checked against create_node and its names resolved."""
        create = self.compute.create_node
        accepted = inspect.signature(create).parameters
        open_ended = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        resolved = {}
        for argument, value in args.items():
            if argument in OWN_ARGS:
                raise ProviderError(f"{self.label}: create_args.{argument} is set by cei "
                                    "from the plan's own keys (image, size, location, "
                                    "userdata)", transient=False)
            if argument not in accepted and not open_ended:
                hint = did_you_mean(argument, [a for a in accepted if a != "self"])
                raise ProviderError(f"{self.label}: create_node takes no argument "
                                    f"{argument!r}{hint}", transient=False)
            resolved[argument] = self.argument(argument, value)
        return resolved

    def argument(self, argument: str, value: Any) -> Any:
        """One create_args value, its names resolved where a list call knows them."""
        if argument not in LOOKUPS:
            return value
        what, calls = LOOKUPS[argument]
        listing = next((getattr(self.compute, c) for c in calls
                        if _bare(getattr(self.compute, c, None))), None)
        if listing is None:  # this driver cannot list them without more to go on
            return value
        items = self.call(f"{self.label}: listing {what}s for create_args.{argument}", listing)
        objects = takes_objects(self.compute.create_node, argument)

        def one(wanted: Any) -> Any:
            if not isinstance(wanted, str):
                return wanted
            found = pick(items, wanted, what, f"{self.label}: create_args.{argument}")
            if objects:
                return found
            ident, name = _ident(found)
            return ident if argument.endswith("_ids") else name

        return [one(v) for v in value] if isinstance(value, list) else one(value)
