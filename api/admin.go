package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

// login signs a local user in and returns a personal API token (the CLI's
// `fvescrow login`). OIDC users create tokens in the web UI instead.
func (h *handlers) login(w http.ResponseWriter, r *http.Request) {
	var req wire.LoginRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	u, err := h.Local.Verify(r.Context(), req.Username, req.Password, req.TOTP, req.NewPassword)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	tok, info, err := h.issueToken(r, u, "cli login", u.Roles, h.TokenTTL)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p := &auth.Principal{UserID: u.ID, Name: u.DisplayName, Email: u.Email, Roles: u.Roles, Groups: u.Groups}
	WriteJSON(w, http.StatusOK, wire.LoginResponse{Token: tok, TokenID: info.ID, ExpiresAt: info.ExpiresAt, Me: toMe(p)})
}

// issueToken creates an API token for u with roles (each must be u's).
func (h *handlers) issueToken(r *http.Request, u escrow.User, name string, roles []escrow.Role, ttl time.Duration) (string, escrow.APIToken, error) {
	for _, role := range roles {
		if !auth.Covers(u.Roles, role) {
			return "", escrow.APIToken{}, fmt.Errorf("%w: a token cannot have role %q its owner lacks", escrow.ErrForbidden, role)
		}
	}
	secret := auth.NewSecret("fve_")
	now := time.Now()
	t := escrow.APIToken{ID: "tok_" + auth.NewSecret("")[:12], Name: name, Owner: u.ID, Roles: roles, Hash: auth.HashSecret(secret), CreatedAt: now}
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl)
	}
	if err := h.People.CreateAPIToken(r.Context(), t); err != nil {
		return "", escrow.APIToken{}, err
	}
	if _, err := h.Audit.AppendAudit(r.Context(), escrow.Event{Time: now, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: u.ID, Name: u.DisplayName},
		Action: auth.ActionTokenCreated, Detail: map[string]string{"token": t.ID, "name": name, "roles": fmt.Sprint(roleNames(roles))}}); err != nil {
		return "", escrow.APIToken{}, err
	}
	return secret, t, nil
}

func (h *handlers) listTokens(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	owner := p.UserID
	if p.Can(auth.PermTokenAdmin) && r.URL.Query().Get("all") == "true" {
		owner = ""
	}
	ts, err := h.People.APITokens(r.Context(), owner)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := []wire.Token{}
	for _, t := range ts {
		out = append(out, toToken(t))
	}
	WriteJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (h *handlers) createToken(w http.ResponseWriter, r *http.Request) {
	var req wire.TokenRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	p := principal(r)
	u, err := h.People.User(r.Context(), p.UserID)
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w: static tokens cannot create tokens", escrow.ErrForbidden))
		return
	}
	roles := p.Roles // at most what the principal has now
	if len(req.Roles) > 0 {
		roles = nil
		for _, name := range req.Roles {
			role := escrow.Role(name)
			if !role.Valid() {
				h.fail(w, r, fmt.Errorf("%w: unknown role %q", escrow.ErrInvalid, name))
				return
			}
			// Never more than the principal can do (an admin may mint an
			// agent token; a helpdesk user may not mint an auditor token).
			if !auth.Covers(p.Roles, role) {
				h.fail(w, r, fmt.Errorf("%w: you do not have role %q", escrow.ErrForbidden, name))
				return
			}
			roles = append(roles, role)
		}
	}
	if u.Source == "oidc" {
		u.Roles = p.Roles // an IdP user's roles come from the sign-in
	}
	tok, t, err := h.issueToken(r, u, req.Name, roles, time.Duration(req.ExpiresInHours)*time.Hour)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusCreated, wire.TokenCreated{Token: tok, Info: toToken(t)})
}

func (h *handlers) revokeToken(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	id := chi.URLParam(r, "id")
	t, err := h.People.APIToken(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if t.Owner != p.UserID && !p.Can(auth.PermTokenAdmin) {
		h.fail(w, r, escrow.ErrNotFound)
		return
	}
	now := time.Now()
	if err := h.People.RevokeAPIToken(r.Context(), id, now); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.Audit.AppendAudit(r.Context(), escrow.Event{Time: now, Actor: p.Actor(), Action: auth.ActionTokenRevoked,
		Detail: map[string]string{"token": id, "owner": t.Owner}}); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) listUsers(w http.ResponseWriter, r *http.Request) {
	us, err := h.People.Users(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := []wire.User{}
	for _, u := range us {
		out = append(out, toUser(u))
	}
	WriteJSON(w, http.StatusOK, map[string]any{"users": out})
}

func parseRoles(names []string) ([]escrow.Role, error) {
	var out []escrow.Role
	for _, n := range names {
		r := escrow.Role(n)
		if !r.Valid() {
			return nil, fmt.Errorf("%w: unknown role %q", escrow.ErrInvalid, n)
		}
		out = append(out, r)
	}
	return out, nil
}

func (h *handlers) createUser(w http.ResponseWriter, r *http.Request) {
	var req wire.UserRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	roles, err := parseRoles(req.Roles)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	nu, err := h.Local.CreateUser(r.Context(), principal(r).Actor(), req.Username, req.DisplayName, req.Email, roles, req.TOTP)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusCreated, wire.UserCreated{User: toUser(nu.User), OneTimePassword: nu.OneTimePassword, TOTPURI: nu.TOTPURI})
}

func (h *handlers) updateUser(w http.ResponseWriter, r *http.Request) {
	var req wire.UserUpdate
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	p := principal(r)
	u, err := h.People.User(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	detail := map[string]string{"user": u.ID}
	if req.Roles != nil {
		roles, err := parseRoles(req.Roles)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		u.Roles, detail["roles"] = roles, fmt.Sprint(req.Roles)
	}
	if req.Disabled != nil {
		if *req.Disabled && u.ID == p.UserID {
			h.fail(w, r, fmt.Errorf("%w: you cannot disable yourself", escrow.ErrInvalid))
			return
		}
		u.Disabled, detail["disabled"] = *req.Disabled, strconv.FormatBool(*req.Disabled)
	}
	if err := h.People.UpdateUser(r.Context(), u); err != nil {
		h.fail(w, r, err)
		return
	}
	// Roles are fixed in sessions at sign-in: end them so changes apply now.
	if err := h.People.DeleteUserSessions(r.Context(), u.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.Audit.AppendAudit(r.Context(), escrow.Event{Time: time.Now(), Actor: p.Actor(), Action: auth.ActionUserUpdated, Detail: detail}); err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, toUser(u))
}

func (h *handlers) liftBlock(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	actor := chi.URLParam(r, "actor")
	now := time.Now()
	err := h.People.LiftBlocks(r.Context(), actor, p.Actor(), now, escrow.Event{Time: now, Actor: p.Actor(), Action: escrow.ActionOperatorUnblocked,
		Detail: map[string]string{"operator": actor}})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) listNotifications(w http.ResponseWriter, r *http.Request) {
	q := escrow.NotificationQuery{Limit: 200}
	if st := r.URL.Query().Get("state"); st != "" {
		q.States = []escrow.NotificationState{escrow.NotificationState(st)}
	}
	ns, err := h.People.Notifications(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := []wire.Notification{}
	for _, n := range ns {
		out = append(out, wire.Notification{ID: n.ID, Channel: n.Channel, Target: n.Target, Subject: n.Subject, State: string(n.State),
			Attempts: n.Attempts, LastError: n.LastError, AuditSeq: n.AuditSeq, CreatedAt: n.CreatedAt, DeliveredAt: optTime(n.DeliveredAt)})
	}
	WriteJSON(w, http.StatusOK, map[string]any{"notifications": out})
}

// auditQuery reads the filters of the audit endpoints.
func auditQuery(r *http.Request) (escrow.AuditQuery, error) {
	v := r.URL.Query()
	q := escrow.AuditQuery{Device: escrow.DeviceID(v.Get("device")), ActorID: v.Get("actor"), Action: v.Get("action")}
	var err error
	if s := v.Get("after"); s != "" {
		if q.AfterSeq, err = strconv.ParseInt(s, 10, 64); err != nil {
			return q, fmt.Errorf("%w: after must be a record number", escrow.ErrInvalid)
		}
	}
	for name, dst := range map[string]*time.Time{"since": &q.Since, "until": &q.Until} {
		if s := v.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return q, fmt.Errorf("%w: %s must be an RFC 3339 time", escrow.ErrInvalid, name)
			}
			*dst = t
		}
	}
	q.Limit, _ = strconv.Atoi(v.Get("limit"))
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 200
	}
	return q, nil
}

func (h *handlers) listAudit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQuery(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	recs, err := h.Audit.AuditRecords(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := wire.AuditList{Records: []wire.AuditRecord{}}
	for _, rec := range recs {
		out.Records = append(out.Records, ToAudit(rec))
	}
	if len(recs) == q.Limit {
		out.Next = recs[len(recs)-1].Seq
	}
	WriteJSON(w, http.StatusOK, out)
}

func (h *handlers) exportAudit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQuery(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	format := r.URL.Query().Get("format")
	aw, err := wire.NewAuditWriter(w, format)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ct := "application/x-ndjson"
	if format == "csv" {
		ct = "text/csv; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	q.Limit = 1000
	for {
		recs, err := h.Audit.AuditRecords(r.Context(), q)
		if err != nil {
			if errors.Is(err, r.Context().Err()) {
				return
			}
			h.Log.ErrorContext(r.Context(), "audit export", "err", err) // headers are gone: the body is cut short
			return
		}
		for _, rec := range recs {
			if err := aw.Write(ToAudit(rec)); err != nil {
				return
			}
			q.AfterSeq = rec.Seq
		}
		if len(recs) < q.Limit {
			_ = aw.Flush()
			return
		}
	}
}
