package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

type tokensPage struct {
	Tokens  []wire.Token
	Roles   []string // the roles a new token may carry: the viewer's
	Created *wire.TokenCreated
	Name    string
}

// Lifetimes offered for new tokens, in hours (0: no expiry).
var tokenLifetimes = []int{24, 24 * 7, 24 * 30, 24 * 90, 0}

func (u *UI) tokensData(r *http.Request) (tokensPage, error) {
	p := principal(r)
	ts, err := u.d.People.APITokens(r.Context(), p.UserID)
	if err != nil {
		return tokensPage{}, err
	}
	tp := tokensPage{}
	for _, t := range ts {
		tp.Tokens = append(tp.Tokens, api.ToToken(t))
	}
	// Every role the person covers: an admin may mint an agent token.
	for _, role := range escrow.AllRoles {
		if !auth.Covers(p.Roles, role) {
			continue
		}
		tp.Roles = append(tp.Roles, string(role))
	}
	return tp, nil
}

func (u *UI) tokensPage(w http.ResponseWriter, r *http.Request) {
	tp, err := u.tokensData(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "tokens", "API tokens", tp)
}

// createToken mirrors POST /api/v1/tokens: at most the roles the person
// has now; the token is shown once, in this response only.
func (u *UI) createToken(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, fmt.Errorf("%w: unreadable form", escrow.ErrInvalid))
		return
	}
	hours, _ := strconv.Atoi(r.PostFormValue("expires_in_hours"))
	req := wire.TokenRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Roles: r.PostForm["roles"], ExpiresInHours: hours}
	fail := func(err error) {
		tp, derr := u.tokensData(r)
		if derr != nil {
			u.fail(w, r, derr)
			return
		}
		tp.Name = req.Name
		status, msg := u.classify(r, err)
		u.render(w, r, status, "tokens", "API tokens", tp, withError(msg))
	}
	if err := req.Validate(); err != nil {
		fail(err)
		return
	}
	user, err := u.d.People.User(r.Context(), p.UserID)
	if err != nil {
		fail(err)
		return
	}
	roles := p.Roles
	if len(req.Roles) > 0 {
		roles = nil
		for _, name := range req.Roles {
			if !auth.Covers(p.Roles, escrow.Role(name)) {
				fail(fmt.Errorf("%w: you do not have role %q", escrow.ErrForbidden, name))
				return
			}
			roles = append(roles, escrow.Role(name))
		}
	}
	if user.Source == "oidc" {
		user.Roles = p.Roles // an IdP user's roles come from the sign-in
	}
	secret, t, err := api.IssueToken(u.d, r, user, req.Name, roles, time.Duration(req.ExpiresInHours)*time.Hour)
	if err != nil {
		fail(err)
		return
	}
	tp, err := u.tokensData(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	tp.Created = &wire.TokenCreated{Token: secret, Info: api.ToToken(t)}
	u.render(w, r, http.StatusCreated, "tokens", "API tokens", tp)
}

// revokeToken mirrors DELETE /api/v1/tokens/{id}.
func (u *UI) revokeToken(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	id := chi.URLParam(r, "id")
	t, err := u.d.People.APIToken(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if t.Owner != p.UserID && !p.Can(auth.PermTokenAdmin) {
		u.fail(w, r, escrow.ErrNotFound)
		return
	}
	now := time.Now()
	if err := u.d.People.RevokeAPIToken(r.Context(), id, now); err != nil {
		u.fail(w, r, err)
		return
	}
	if _, err := u.d.Audit.AppendAudit(r.Context(), escrow.Event{Time: now, Actor: p.Actor(), Action: auth.ActionTokenRevoked,
		Detail: map[string]string{"token": id, "owner": t.Owner}}); err != nil {
		u.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/tokens", http.StatusSeeOther)
}

type usersPage struct {
	Users   []wire.User
	Roles   []string
	Created *auth.NewUser
	Form    wire.UserRequest
}

func (u *UI) usersData(r *http.Request) (usersPage, error) {
	us, err := u.d.People.Users(r.Context())
	if err != nil {
		return usersPage{}, err
	}
	up := usersPage{}
	for _, x := range us {
		up.Users = append(up.Users, api.ToUser(x))
	}
	for _, role := range escrow.AllRoles {
		up.Roles = append(up.Roles, string(role))
	}
	return up, nil
}

func (u *UI) usersPage(w http.ResponseWriter, r *http.Request) {
	up, err := u.usersData(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "users", "Users", up)
}

// createUser makes a local account; its one-time password is shown once.
func (u *UI) createUser(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, fmt.Errorf("%w: unreadable form", escrow.ErrInvalid))
		return
	}
	form := wire.UserRequest{Username: strings.TrimSpace(r.PostFormValue("username")), DisplayName: strings.TrimSpace(r.PostFormValue("display_name")),
		Email: strings.TrimSpace(r.PostFormValue("email")), Roles: r.PostForm["roles"], TOTP: r.PostFormValue("totp") == "on"}
	var roles []escrow.Role
	err := form.Validate()
	for _, n := range form.Roles {
		if role := escrow.Role(n); err == nil && !role.Valid() {
			err = fmt.Errorf("%w: unknown role %q", escrow.ErrInvalid, n)
		} else {
			roles = append(roles, role)
		}
	}
	var nu auth.NewUser
	if err == nil {
		nu, err = u.d.Local.CreateUser(r.Context(), principal(r).Actor(), form.Username, form.DisplayName, form.Email, roles, form.TOTP)
	}
	up, derr := u.usersData(r)
	if derr != nil {
		u.fail(w, r, derr)
		return
	}
	if err != nil {
		up.Form = form
		status, msg := u.classify(r, err)
		if status == http.StatusConflict {
			msg = "a user with that name exists"
		}
		u.render(w, r, status, "users", "Users", up, withError(msg))
		return
	}
	up.Created = &nu
	u.render(w, r, http.StatusCreated, "users", "Users", up)
}
