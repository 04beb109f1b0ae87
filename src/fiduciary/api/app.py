"""The FastAPI application: auth as a dependency, every data route through the vault's policy
decision, domain errors mapped to HTTP in ``errors`` only."""

import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fiduciary import __version__
from fiduciary.access import Principal
from fiduciary.access.users import SESSION_PREFIX
from fiduciary.api import errors
from fiduciary.audit.events import RequestContext, request_context
from fiduciary.errors import Forbidden, Unauthenticated
from fiduciary.privacy.consent import entries_as_dict
from fiduciary.runtime import Runtime

_bearer = HTTPBearer(auto_error=False)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PurposeParam = Annotated[str | None, Query(description="Why the data is processed")]


class CreateRecord(BaseModel):
    subject_id: str = Field(description="The owning data subject")
    data: dict[str, Any]


class UpdateRecord(BaseModel):
    data: dict[str, Any]


class SearchRequest(BaseModel):
    where: dict[str, Any] = Field(description="field: value, all must match (equality)")
    limit: int = 100


class LoginRequest(BaseModel):
    username: str
    password: str
    totp: str | None = None
    recovery_code: str | None = None


class PasswordChange(BaseModel):
    current: str
    new: str


class BreakGlassRequest(BaseModel):
    subject_ids: list[str]
    justification: str
    minutes: int = 30


class NewUser(BaseModel):
    username: str
    roles: list[str]
    regions: list[str] = []


class NewApiKey(BaseModel):
    name: str
    role: str = "service"
    scopes: list[str] | None = None
    days: int | None = None


class NewConsent(BaseModel):
    purpose: str = Field(description="A consent-based purpose, sale_or_sharing or "
                         "sensitive_data_use")
    granted: bool = Field(description="false records a withdrawal (or a CCPA opt-out)")
    notice_version: str | None = Field(None, description="Required when granting")
    method: str = Field(description="web_form, phone, paper, email, in_person, "
                        "opt_out_preference_signal or api")
    notice_id: str | None = None
    channel: str | None = None


class NewDsr(BaseModel):
    subject_id: str
    type: str = Field(description="gdpr: access, portability, rectification, erasure, "
                      "restriction, objection; ccpa: know, delete, correct, "
                      "opt_out_sale_sharing, limit_sensitive")
    regime: str = Field(description="gdpr or ccpa")
    received_at: datetime = Field(description="When the request reached the insurer (UTC)")
    channel: str | None = None


class DsrVerification(BaseModel):
    method: str


class DsrReason(BaseModel):
    reason: str


class DsrFulfilment(BaseModel):
    note: str | None = Field(None, description="Required for rectification and correct: "
                             "what was corrected")
    purposes: list[str] | None = Field(None, description="Objection: the consent-based "
                                       "purposes objected to (default: all)")


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Fiduciary", version=__version__,
                  description="Customer-data vault for insurers")
    errors.install(app)
    vault = rt.vault

    def authenticate(creds: HTTPAuthorizationCredentials | None) -> tuple[Principal, str]:
        token = creds.credentials if creds else ""
        if token.startswith(SESSION_PREFIX):
            return rt.users.authenticate(token), token
        return rt.api_keys.authenticate(token or None), token

    def principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        who, _ = authenticate(creds)
        if who.must_change_password:
            raise Forbidden("change the initial password first: POST /v1/auth/password",
                            reason="password_change_required")
        return who

    def any_principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> tuple[Principal, str]:
        return authenticate(creds)

    def permitted(permission: str, *alternatives: str) -> Any:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if not any(who.can(p) for p in (permission, *alternatives)):
                raise Forbidden(f"requires the {' or '.join((permission, *alternatives))} "
                                "permission", reason="field_not_permitted")
            return who
        return check

    Caller = Annotated[Principal, Depends(principal)]
    AnyCaller = Annotated[tuple[Principal, str], Depends(any_principal)]
    UserAdmin = Annotated[Principal, Depends(permitted("users:manage"))]
    Auditor = Annotated[Principal, Depends(permitted("audit:read"))]
    KeyAdmin = Annotated[Principal, Depends(permitted("apikeys:manage"))]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        rt.db.ping()
        return {"status": "ok", "version": __version__}

    # -- auth ----------------------------------------------------------------------------------
    @app.post("/v1/auth/login", tags=["auth"])
    def login(body: LoginRequest) -> dict[str, Any]:
        s = rt.users.login(body.username, body.password, body.totp, body.recovery_code)
        return {"token": s.token, "expires_at": s.expires_at.isoformat()}

    @app.post("/v1/auth/logout", status_code=204, tags=["auth"])
    def logout(caller: AnyCaller) -> Response:
        who, token = caller
        if who.kind == "user":
            rt.users.logout(who, token)
        return Response(status_code=204)

    @app.post("/v1/auth/password", status_code=204, tags=["auth"])
    def change_password(body: PasswordChange, caller: AnyCaller) -> Response:
        who, _ = caller
        if who.kind != "user":
            raise Unauthenticated("password changes need a staff session")
        rt.users.change_password(who, body.current, body.new)
        return Response(status_code=204)

    @app.get("/v1/auth/me", tags=["auth"])
    def me(who: Caller) -> dict[str, Any]:
        return {"id": who.id, "kind": who.kind, "username": who.username,
                "roles": list(who.roles), "regions": list(who.regions),
                "permissions": sorted(who.permissions),
                "training_current": who.training_current,
                "break_glass": {s: exp.isoformat() for s, (_, exp) in who.break_glass.items()}}

    @app.post("/v1/auth/break-glass", status_code=201, tags=["auth"])
    def break_glass(body: BreakGlassRequest, who: Caller) -> dict[str, Any]:
        g = rt.users.break_glass(who, body.subject_ids, body.justification, body.minutes)
        return {"id": g.id, "subject_ids": g.subject_ids, "expires_at": g.expires_at.isoformat(),
                "review": "pending"}

    # -- subjects and records ------------------------------------------------------------------
    @app.post("/v1/subjects", status_code=201, tags=["subjects"])
    def create_subject(who: Caller) -> dict[str, Any]:
        s = vault.create_subject(who)
        return {"id": s.id, "status": s.status, "created_at": s.created_at.isoformat()}

    @app.get("/v1/subjects/{subject_id}", tags=["subjects"])
    def get_subject(subject_id: str, who: Caller) -> dict[str, Any]:
        s = vault.get_subject(who, subject_id)
        return {"id": s.id, "status": s.status, "created_at": s.created_at.isoformat()}

    @app.get("/v1/subjects/{subject_id}/records", tags=["subjects"])
    def subject_records(subject_id: str, who: Caller, purpose: PurposeParam = None
                        ) -> dict[str, Any]:
        found = vault.list_subject_records(who, subject_id, purpose)
        return {"items": [r.as_dict() for r in found]}

    @app.post("/v1/collections/{collection}/records", status_code=201, tags=["records"])
    def create_record(collection: str, body: CreateRecord, who: Caller,
                      purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.create_record(who, collection, body.subject_id, body.data,
                                   purpose).as_dict()

    @app.get("/v1/collections/{collection}/records/{record_id}", tags=["records"])
    def get_record(collection: str, record_id: str, who: Caller,
                   purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.get_record(who, collection, record_id, purpose).as_dict()

    @app.patch("/v1/collections/{collection}/records/{record_id}", tags=["records"])
    def update_record(collection: str, record_id: str, body: UpdateRecord, who: Caller,
                      purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.update_record(who, collection, record_id, body.data, purpose).as_dict()

    @app.delete("/v1/collections/{collection}/records/{record_id}", status_code=204,
                tags=["records"])
    def delete_record(collection: str, record_id: str, who: Caller,
                      purpose: PurposeParam = None) -> Response:
        vault.delete_record(who, collection, record_id, purpose)
        return Response(status_code=204)

    @app.post("/v1/collections/{collection}/search", tags=["records"])
    def search(collection: str, body: SearchRequest, who: Caller,
               purpose: PurposeParam = None) -> dict[str, Any]:
        found = vault.search(who, collection, body.where, purpose, limit=body.limit)
        return {"items": [r.as_dict() for r in found]}

    @app.get("/v1/datamap", tags=["datamap"])
    def datamap(_: Caller) -> dict[str, Any]:
        return rt.datamap.as_dict()

    # -- audit trail (compliance_officer, dpo, security_analyst) -------------------------------
    def audited(who: Principal, what: str, **details: Any) -> None:
        rt.audit.append_committed(rt.audit.event(who, "audit.read",
                                                 details={"query": what, **details}))

    @app.get("/v1/audit/events", tags=["audit"])
    def audit_events(who: Auditor, subject_id: str | None = None, record_id: str | None = None,
                     actor: str | None = None, action: str | None = None,
                     since: datetime | None = None, until: datetime | None = None,
                     limit: int = 100, cursor: int | None = None) -> dict[str, Any]:
        filters = {k: v for k, v in {"subject_id": subject_id, "record_id": record_id,
                                     "actor": actor, "action": action}.items() if v}
        items, nxt = rt.trail.events(subject_id=subject_id, record_id=record_id, actor=actor,
                                     action=action, since=since, until=until, limit=limit,
                                     cursor=cursor)
        audited(who, "events", **filters)
        return {"items": items, "next_cursor": nxt}

    @app.get("/v1/audit/checkpoint", tags=["audit"])
    def audit_checkpoint(who: Auditor) -> dict[str, Any]:
        cp = rt.trail.latest_checkpoint().as_dict()
        audited(who, "checkpoint")
        return cp

    @app.get("/v1/audit/proof/inclusion", tags=["audit"])
    def audit_inclusion(who: Auditor, index: int, size: int) -> dict[str, Any]:
        proof = rt.trail.inclusion(index, size)
        audited(who, "proof/inclusion", index=index, size=size)
        return proof

    @app.get("/v1/audit/proof/consistency", tags=["audit"])
    def audit_consistency(who: Auditor, size1: Annotated[int, Query(alias="from")],
                          size2: Annotated[int, Query(alias="to")]) -> dict[str, Any]:
        proof = rt.trail.consistency(size1, size2)
        audited(who, "proof/consistency", size1=size1, size2=size2)
        return proof

    # -- records of processing, GDPR Art. 30 (compliance_officer, dpo, admin) ------------------
    @app.get("/v1/ropa", tags=["privacy"], response_model=None)
    def ropa(who: Annotated[Principal, Depends(permitted("config:read"))],
             fmt: Annotated[str, Query(alias="format", pattern="^(json|html)$")] = "json",
             ) -> dict[str, Any] | Response:
        from fastapi.responses import HTMLResponse

        from fiduciary.privacy.ropa import render_html

        doc = rt.ropa.generate(who, fmt)
        return HTMLResponse(render_html(doc)) if fmt == "html" else doc

    # -- consent ledger and data-subject requests ----------------------------------------------
    ConsentReader = Annotated[Principal, Depends(permitted("consent:read", "privacy:manage"))]
    ConsentWriter = Annotated[Principal, Depends(permitted("consent:write", "privacy:manage"))]
    PrivacyOfficer = Annotated[Principal, Depends(permitted("privacy:manage"))]
    GpcHeader = Annotated[str | None, Header(alias="Sec-GPC", description="Global Privacy "
                                             "Control: 1 opts the subject out of sale and "
                                             "sharing (CCPA regs 7025)")]

    @app.post("/v1/subjects/{subject_id}/consents", status_code=201, tags=["consent"])
    def record_consent(subject_id: str, body: NewConsent, who: ConsentWriter,
                       sec_gpc: GpcHeader = None) -> dict[str, Any]:
        rt.consent.honour_signal(who, subject_id, sec_gpc)
        return rt.consent.record(who, subject_id, body.purpose, body.granted, body.notice_id,
                                 body.notice_version, body.method, body.channel).as_dict()

    @app.get("/v1/subjects/{subject_id}/consents", tags=["consent"])
    def subject_consents(subject_id: str, who: ConsentReader,
                         sec_gpc: GpcHeader = None) -> dict[str, Any]:
        rt.consent.honour_signal(who, subject_id, sec_gpc)
        return entries_as_dict(*rt.consent.read(who, subject_id))

    @app.post("/v1/dsr", status_code=201, tags=["dsr"])
    def create_dsr(body: NewDsr, who: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.create(who, body.subject_id, body.type, body.regime, body.received_at,
                             body.channel).as_dict(rt.clock.now())

    @app.get("/v1/dsr", tags=["dsr"])
    def list_dsr(_: PrivacyOfficer, status: str | None = None, overdue: bool = False,
                 due_within_days: int | None = None, subject_id: str | None = None,
                 limit: int = 1000) -> dict[str, Any]:
        now = rt.clock.now()
        found = rt.dsr.list(status, overdue, due_within_days, subject_id, limit)
        return {"items": [r.as_dict(now) for r in found]}

    @app.get("/v1/dsr/{request_id}", tags=["dsr"])
    def get_dsr(request_id: str, _: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.get(request_id).as_dict(rt.clock.now())

    @app.get("/v1/dsr/{request_id}/package", tags=["dsr"], response_model=None)
    def download_package(request_id: str, who: PrivacyOfficer,
                         format: str = "json") -> Response:
        req = rt.dsr.get(request_id)
        body, media = rt.packager.download(who, req.result, req.subject_id, format)
        name = f"access-{request_id}.{format}"
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store"})

    @app.post("/v1/dsr/{request_id}/verify", tags=["dsr"])
    def verify_dsr(request_id: str, body: DsrVerification, who: PrivacyOfficer
                   ) -> dict[str, Any]:
        return rt.dsr.verify(who, request_id, body.method).as_dict(rt.clock.now())

    @app.post("/v1/dsr/{request_id}/acknowledge", tags=["dsr"])
    def acknowledge_dsr(request_id: str, who: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.acknowledge(who, request_id).as_dict(rt.clock.now())

    @app.post("/v1/dsr/{request_id}/extend", tags=["dsr"])
    def extend_dsr(request_id: str, body: DsrReason, who: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.extend(who, request_id, body.reason).as_dict(rt.clock.now())

    @app.post("/v1/dsr/{request_id}/start", tags=["dsr"])
    def start_dsr(request_id: str, who: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.start(who, request_id).as_dict(rt.clock.now())

    @app.post("/v1/dsr/{request_id}/fulfil", tags=["dsr"])
    def fulfil_dsr(request_id: str, who: PrivacyOfficer,
                   body: DsrFulfilment | None = None) -> dict[str, Any]:
        body = body or DsrFulfilment()
        return rt.dsr.fulfil(who, request_id, body.note, body.purposes).as_dict(rt.clock.now())

    @app.post("/v1/dsr/{request_id}/deny", tags=["dsr"])
    def deny_dsr(request_id: str, body: DsrReason, who: PrivacyOfficer) -> dict[str, Any]:
        return rt.dsr.deny(who, request_id, body.reason).as_dict(rt.clock.now())

    # -- administration (no customer data) -----------------------------------------------------
    @app.get("/v1/admin/users", tags=["admin"])
    def list_users(_: UserAdmin) -> dict[str, Any]:
        return {"items": [{"username": u.username, "roles": list(u.roles),
                           "regions": list(u.regions), "disabled": u.disabled_at is not None,
                           "mfa_enrolled": u.mfa_enrolled_at is not None,
                           "last_login_at": u.last_login_at.isoformat()
                           if u.last_login_at else None} for u in rt.users.all()]}

    @app.post("/v1/admin/users", status_code=201, tags=["admin"])
    def create_user(body: NewUser, _: UserAdmin) -> dict[str, Any]:
        c = rt.users.create(body.username, body.roles, body.regions)
        return {"username": c.user.username, "password": c.password,
                "totp_secret": c.totp_secret, "totp_uri": c.totp_uri,
                "recovery_codes": c.recovery_codes}

    @app.post("/v1/admin/users/{username}/disable", tags=["admin"])
    def disable_user(username: str, _: UserAdmin) -> dict[str, Any]:
        u = rt.users.set_disabled(username, True)
        return {"username": u.username, "disabled": True}

    @app.get("/v1/admin/apikeys", tags=["admin"])
    def list_keys(_: KeyAdmin) -> dict[str, Any]:
        now = rt.clock.now()
        return {"items": [{"id": k.id, "name": k.name, "role": k.role, "state": k.state(now),
                           "scopes": list(k.scopes) if k.scopes else None}
                          for k in rt.api_keys.all()]}

    @app.post("/v1/admin/apikeys", status_code=201, tags=["admin"])
    def create_key(body: NewApiKey, _: KeyAdmin) -> dict[str, Any]:
        key, token = rt.api_keys.create(body.name, body.role,
                                        timedelta(days=body.days) if body.days else None,
                                        body.scopes)
        return {"id": key.id, "role": key.role, "api_key": token}

    @app.delete("/v1/admin/apikeys/{key_id}", status_code=204, tags=["admin"])
    def revoke_key(key_id: str, _: KeyAdmin) -> Response:
        rt.api_keys.revoke(key_id)
        return Response(status_code=204)

    if rt.settings.bench_endpoints:
        from fiduciary.api.bench import install as install_bench

        install_bench(app, rt, principal)

    @app.middleware("http")
    async def _context(request: Request, call_next: Any) -> Any:
        given = request.headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_context.set(RequestContext(
            request_id=request_id, client=request.client.host if request.client else None))
        try:
            response = await call_next(request)
        finally:
            request_context.reset(token)
        response.headers["X-Request-ID"] = request_id
        # Responses carry customer data: no caching by browsers or proxies.
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
