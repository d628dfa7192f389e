"""An in-memory Kubernetes API for the operator tests: kmock's emulator with the gaps filled.

``PatchedEmulator`` subclasses ``kmock.KubernetesEmulator`` (kmock 0.8) and fixes what the
operator tests (Kopf, the ``kubernetes`` client, the fake controllers, ``kubectl``) trip over.
Each gap below has a stock-vs-patched test in ``tests/operator/test_k8s_emulator.py``, which also
asserts the *stock* behaviour, so a kmock release that fixes a gap upstream shows up as a failing
stock case; ``tests/operator/test_kubectl.py`` drives the real ``kubectl`` against it. Where the
behaviour comes from the Kubernetes sources, the upstream file is named next to the code.

Gaps fixed (stock kmock 0.8 → this subclass):

* **Stamping.** Stock kmock stores the POSTed body as is: no ``resourceVersion``, ``uid``,
  ``creationTimestamp`` or ``generation``, not even ``metadata.namespace`` for a namespaced URL.
  Here, objects get all of them; ``resourceVersion`` is one global counter bumped by every
  change; ``generation`` is bumped by changes outside ``metadata`` (and outside ``status`` where
  the resource has a status subresource). No-op patches keep the ``resourceVersion``.
  ``generateName`` works. A create answers 201 (stock: 200), like the apiserver, and a create
  of an undeclared resource is 404 (stock kmock declares it on the fly). A created Service gets
  ``status: {loadBalancer: {}}`` as the apiserver's Service strategy gives it.
* **JSON-patch ``test`` op.** A failing ``test`` gives 500 in stock kmock, so Kopf's finalizer
  patch (``test /metadata/resourceVersion``) fails, Kopf throttles, and handlers never run. Here
  it is 422 ``Invalid``, like the apiserver.
* **Watches.** Stock ``_serve_watch`` snapshots the objects, streams the snapshot (suspending on
  back-pressure), and only then subscribes to the event bus: events published in between are
  lost. It also ignores ``resourceVersion`` (a LIST → DELETE → WATCH loses the deletion) and
  ``timeoutSeconds``, and answers ``Content-Type: application/octet-stream``, which client-go
  (``kubectl get -w``, ``kubectl wait``) cannot decode. Here, the snapshot (or the replay of the
  event log after ``?resourceVersion=N``) and the subscription are atomic under the lock that
  every mutation holds while publishing, ``timeoutSeconds`` ends the stream, the content type
  is the apiserver's, and a ``resourceVersion`` older than the emulator keeps (the last
  ``watch_cache_size`` events per resource) gets one ``ERROR`` event with a 410 ``Expired``
  ``Status``, as the apiserver's watch cache does. There are no BOOKMARK events.
* **Status subresource.** Stock kmock applies any patch anywhere. Here, where the resource
  declares ``status``: the main endpoint ignores ``.status``, ``/status`` changes only
  ``.status``, and a create drops ``.status``. Other subresources (``scale``, ``log``…) are 404.
* **Schema validation.** Stock kmock accepts anything. Here, CRDs registered with
  :meth:`PatchedEmulator.add_crd` (or POSTed as ``CustomResourceDefinition`` objects) prune unknown
  fields like the apiserver (honouring ``x-kubernetes-preserve-unknown-fields``) and validate with
  JSON-Schema **draft 4**, which is what OpenAPI v3.0 means (``exclusiveMinimum: true`` is a
  boolean; newer drafts read it as the number 1). Failures are 422 ``Invalid`` ``Status`` objects
  with ``details.causes``. Unknown fields follow ``?fieldValidation=``: ``Strict`` rejects them
  (400 on create/update, 422 on patch, the apiserver's messages), ``Warn`` (the default) answers
  with ``Warning: 299`` headers, ``Ignore`` drops them silently. Built-in kinds are not validated.
* **Versions.** Every served version of a CRD is one storage: an object created through one
  version is visible through the others with ``apiVersion`` rewritten (conversion ``None``).
* **Discovery.** Stock ``/api/v1`` reports ``groupVersion: "/v1"`` (kubectl then knows no core
  resource) and ``preferredVersion`` is an arbitrary served version (for ``ray.io``, often
  ``v1alpha1``). Here ``/api/v1`` says ``v1``, versions are ordered by Kubernetes' version
  priority (v1 > v1beta1 > v1alpha1), and ``<plural>/status`` lists the verbs it has.
* **Tables.** Stock kmock ignores ``Accept``. Here ``Accept: application/json;as=Table;v=v1;
  g=meta.k8s.io`` (what ``kubectl get`` sends) answers a ``meta.k8s.io`` ``Table``: a CRD's
  ``additionalPrinterColumns`` (JSONPath per object, ``priority`` kept, dates as ages) after
  ``Name``, or the default Name/Created At table for other kinds, with ``?includeObject=``.
* **OpenAPI.** Stock kmock has no ``/openapi``. Here ``/openapi/v3`` and
  ``/openapi/v3/apis/<group>/<version>`` are built from the registered CRD schemas, so
  ``kubectl apply`` validates server-side with ``fieldValidation=Strict``.
* **``/version/``** (with the slash, as kr8s asks) is served as well as ``/version``.
* **Garbage collection.** Stock kmock ignores ``ownerReferences``. Here a small collector (run as
  a task after the change that needs it, as the real one is a controller) deletes dependents
  whose owners are gone, honouring ``propagationPolicy`` (``Background`` by default,
  ``Orphan`` by default for batch/v1 Jobs and ReplicationControllers, ``Foreground``) and the
  ``orphan``/``foregroundDeletion`` finalizers; ``blockOwnerDeletion`` holds a foreground owner.
* **Authorization (opt-in).** With :attr:`PatchedEmulator.authorizer` set (see
  :func:`rbac_authorizer`), every resource request is authorized for its user (the bearer
  token is the user name) and the ``OwnerReferencesPermissionEnforcement`` admission rule
  applies: ``blockOwnerDeletion: true`` needs ``update`` on the owner's ``<resource>/finalizers``.
* **Selectors.** Stock kmock ignores ``labelSelector``/``fieldSelector``. Here both filter lists
  and watches (equality, ``!=``, ``in``/``notin``, existence; field selectors compare a dotted
  path).
* **Lists.** Stock lists have ``resourceVersion: "..."`` and no ``kind``; here they have the
  current global ``resourceVersion``, ``apiVersion`` and ``kind: <Kind>List``.
* **Namespaces.** Stock kmock's path parser crashes on ``/api/v1/namespaces`` (500) and reads
  ``/api/v1/namespaces/NAME`` as "namespace NAME, no resource". Here both address the
  cluster-scoped ``v1/namespaces`` resource (and ``…/NAME/status|finalize``).
* **``?watch=True``.** kmock only recognises ``watch=true``; the ``kubernetes`` client sends
  ``watch=True`` (Python's ``str(True)``) and gets a plain list back. Here every spelling Go's
  ``strconv.ParseBool`` accepts starts a watch.
* **PUT.** Stock kmock has no PUT (404). Here a PUT replaces the object, 409 on a stale
  ``metadata.resourceVersion``.
* **PATCH content types.** Stock kmock ignores ``Content-Type`` and picks merge- or JSON-patch by
  the body's shape. Here: ``application/merge-patch+json`` needs an object body and
  ``application/json-patch+json`` a list (else 400); ``application/strategic-merge-patch+json`` is
  **applied as a plain merge patch** (fine for maps; lists are replaced, not merged by key, and
  ``$patch``/``$retainKeys``/``$setElementOrder`` directives are refused with 400) and, like the
  apiserver, refused with 415 for custom resources; anything else (``application/json``,
  server-side apply's ``application/apply-patch+yaml``) is 415. The ``kubernetes`` client sends
  strategic-merge for dict patches of built-in kinds and merge-patch for custom objects.
* **Errors.** Deliberate 4xx answers are not recorded in ``emulator.errors``, so that list holds
  only real server-side failures (500s) worth asserting on. Not-found and conflict messages are
  the apiserver's (``benchmarks.testbed.dev "x" not found``).

Not emulated (by design): admission other than the rule above, defaulting other than the
Service status, server-side apply, ``dryRun``, ``deletecollection``, namespace deletion cascades,
BOOKMARK events, the dedicated printers of built-in kinds (they get the default table), OpenAPI
schemas of built-in kinds (so ``kubectl apply`` of a built-in kind needs ``--validate=false``).
Resource requests are answered by the subclass directly: kmock's DSL reactions
(``emulator[...] << 500``) only apply to other paths; use :attr:`PatchedEmulator.faults`.

This package relies on kmock internals (``kmock._internal``, the private ``_objects``,
``_buses``, ``_lock``, ``_requests``, and the shape of ``RawHandler.__call__``), hence the
``kmock==0.8`` pin in ``pyproject.toml``. Helpers: :func:`load_crds`, :func:`serve_emulator`,
:func:`write_kubeconfig`.

Modules: ``apimachinery`` (Status errors, selectors, pruning, request parsing), ``tables``,
``rbac``, ``openapi``, ``watch``, ``writes`` and ``gc`` (the mixins of :class:`PatchedEmulator`),
``emulator`` (state, registration, transport, routing, reads, discovery) and ``serving`` (CRDs,
the server, kubeconfigs). This ``__init__`` only re-exports.
"""

from .apimachinery import match_labels, openapi_to_jsonschema, version_priority
from .emulator import REQUEST_WINDOW, PatchedEmulator, fail_requests
from .rbac import Attributes, rbac_authorizer, request_verb, rule_allows
from .serving import (
    BENCHMARK_CRD,
    KUBERAY_DIR,
    ROOT,
    EmulatorHandle,
    dask_crd_dir,
    load_crds,
    serve_emulator,
    write_kubeconfig,
)
from .tables import _cell, human_duration, jsonpath_find

__all__ = [
    "BENCHMARK_CRD", "KUBERAY_DIR", "REQUEST_WINDOW", "ROOT", "Attributes", "EmulatorHandle",
    "PatchedEmulator", "_cell", "dask_crd_dir", "fail_requests", "human_duration",
    "jsonpath_find", "load_crds", "match_labels", "openapi_to_jsonschema", "rbac_authorizer",
    "request_verb", "rule_allows", "serve_emulator", "version_priority", "write_kubeconfig",
]
