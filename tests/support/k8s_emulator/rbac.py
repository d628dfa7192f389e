"""Opt-in authorization: RBAC rules, the request verb, and the
OwnerReferencesPermissionEnforcement admission rule."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kmock import resource
from kmock._internal import rendering  # private: kmock==0.8 is pinned
from kmock._internal.k8s import KubernetesError

from .apimachinery import GO_TRUE, header, qualified, status_error


@dataclass(frozen=True)
class Attributes:
    """What is authorized: authorizer.AttributesRecord, the fields RBAC reads
    (staging/src/k8s.io/apiserver/pkg/authorization/authorizer/interfaces.go)."""
    user: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None


def rule_allows(rule: dict, a: Attributes) -> bool:
    """One ``rbac.authorization.k8s.io/v1`` PolicyRule against a resource request: RuleAllows in
    pkg/apis/rbac/v1/evaluation_helpers.go (``*`` wildcards, ``*/subresource``, resourceNames)."""
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource

    def resource_matches(r: str) -> bool:
        return r in ("*", combined) or bool(
            a.subresource and r.startswith("*/") and r[2:] == a.subresource)

    return (any(v in ("*", a.verb) for v in rule.get("verbs") or [])
            and any(g in ("*", a.group) for g in rule.get("apiGroups") or [])
            and any(resource_matches(r) for r in rule.get("resources") or [])
            and (not rule.get("resourceNames") or a.name in rule["resourceNames"]))


def rbac_authorizer(rules_by_user: dict[str, Iterable[dict]]) -> Callable[[Attributes], bool]:
    """An authorizer for :attr:`PatchedEmulator.authorizer`: each user may do what the rules of
    the roles bound to it allow (in every namespace: bindings are not modelled)."""
    rules = {user: list(rs) for user, rs in rules_by_user.items()}
    return lambda a: any(rule_allows(r, a) for r in rules.get(a.user, []))


_REQUEST_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_verb(request: rendering.Request) -> str:
    """The verb of a resource request
    (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)."""
    method = request.method.value
    if method == "GET":
        if request.params.get("watch") in GO_TRUE:
            return "watch"
        return "get" if request.name else "list"
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return _REQUEST_VERBS.get(method, method.lower())


def forbidden(res: resource, name: str | None, why: str) -> KubernetesError:
    # apierrors.NewForbidden (staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go)
    where = f'{qualified(res)} "{name}"' if name else qualified(res)
    return status_error(403, "Forbidden", f"{where} is forbidden: {why}",
                        name=name, group=res.group, kind=res.plural)


class AuthorizationMixin:
    """:class:`PatchedEmulator`'s authorization, with :attr:`PatchedEmulator.authorizer`."""

    __slots__ = ()

    @staticmethod
    def _user(request: rendering.Request) -> str:
        """The caller: the bearer token stands for the user name; no token is anonymous."""
        kind, _, token = header(request, "Authorization").partition(" ")
        return token.strip() if kind.lower() == "bearer" and token.strip() else "system:anonymous"

    def _authorize(self, request: rendering.Request) -> None:
        if self.authorizer is None:
            return
        res = request.resource
        a = Attributes(self._user(request), request_verb(request), res.group, res.plural,
                       request.subresource or "", request.namespace, request.name)
        if not self.authorizer(a):
            # forbiddenMessage in
            # staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
            what = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
            scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
            raise forbidden(res, a.name,
                            f'User "{a.user}" cannot {a.verb} resource "{what}" in API '
                            f'group "{a.group}" {scope}')

    def _admit_owner_references(self, request: rendering.Request, res: resource,
                                new: dict, old: dict | None) -> None:
        """The OwnerReferencesPermissionEnforcement admission plugin
        (plugin/pkg/admission/gc/gc_admission.go), enforced only with an authorizer."""
        if self.authorizer is None or (res.group, res.plural, request.subresource) == ("", "pods",
                                                                                       "status"):
            return
        new_refs = (new.get("metadata") or {}).get("ownerReferences") or []
        old_refs = ((old or {}).get("metadata") or {}).get("ownerReferences") or []
        if (old is None and not new_refs) or (old is not None and new_refs == old_refs):
            return
        user, ns = self._user(request), request.namespace
        name = request.name or (new.get("metadata") or {}).get("name")
        if old is not None and not self.authorizer(Attributes(user, "delete", res.group, res.plural,
                                                              request.subresource or "", ns, name)):
            raise forbidden(res, name,
                            "cannot set an ownerRef on a resource you can't delete: , <nil>")
        was_blocking = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion") is True}
        blocking = [r for r in new_refs
                    if r.get("blockOwnerDeletion") is True and r.get("uid") not in was_blocking]
        if not blocking or self.authorizer(Attributes(user, "update", "*", "*", "finalizers")):
            return  # finalizeAnythingRecord
        for ref in blocking:
            group, _, version = ref.get("apiVersion", "").rpartition("/")
            mappings = [r for r in self.resources if r.group == group and r.version == version
                        and self.resources[r].kind == ref.get("kind")]
            if not mappings:
                raise forbidden(res, name,
                                f"cannot set blockOwnerDeletion in this case because cannot find "
                                f"RESTMapping for APIVersion {ref.get('apiVersion')} Kind "
                                f"{ref.get('kind')}: "
                                f'no matches for kind "{ref.get("kind")}" in version '
                                f'"{ref.get("apiVersion")}"')
            for owner in mappings:
                if not self.authorizer(Attributes(user, "update", group, owner.plural, "finalizers",
                                                  ns,
                                                  ref.get("name"))):
                    raise forbidden(res, name,
                                    "cannot set blockOwnerDeletion if an ownerReference refers "
                                    "to a resource you can't set finalizers on: , <nil>")
