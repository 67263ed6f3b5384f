package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/fvescrow/fvescrow/api/wire"
)

// RotationQuery selects rotations: State is open, verified, failed or
// canceled ("" for all); Device a device ID or serial; Campaign an ID.
type RotationQuery struct {
	State    string
	Device   string
	Campaign int64
	Limit    int
}

// Rotations lists rotations, newest first.
func (c *Client) Rotations(ctx context.Context, q RotationQuery) ([]wire.Rotation, error) {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Device != "" {
		v.Set("device", q.Device)
	}
	if q.Campaign != 0 {
		v.Set("campaign", strconv.FormatInt(q.Campaign, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out wire.RotationList
	err := c.do(ctx, http.MethodGet, path("rotations"), v, nil, &out)
	return out.Rotations, err
}

// Overdue lists current keys disclosed more than hours ago.
func (c *Client) Overdue(ctx context.Context, hours float64) (wire.OverdueList, error) {
	var out wire.OverdueList
	err := c.do(ctx, http.MethodGet, path("rotations", "overdue"), url.Values{"hours": {strconv.FormatFloat(hours, 'f', -1, 64)}}, nil, &out)
	return out, err
}

// Rotate asks for a device's key to be rotated now. It returns the
// rotation, and whether it is a new one (false: one was under way).
func (c *Client) Rotate(ctx context.Context, ref, reason string) (wire.Rotation, bool, error) {
	resp, err := c.send(ctx, http.MethodPost, path("devices", ref, "rotate"), nil, wire.RotateRequest{Reason: reason})
	if err != nil {
		return wire.Rotation{}, false, err
	}
	defer resp.Body.Close()
	var out wire.Rotation
	if err := decodeBody(resp, &out); err != nil {
		return wire.Rotation{}, false, err
	}
	return out, resp.StatusCode == http.StatusAccepted, nil
}

// StartCampaign starts a rotation campaign.
func (c *Client) StartCampaign(ctx context.Context, r wire.CampaignRequest) (wire.Campaign, error) {
	var out wire.Campaign
	err := c.do(ctx, http.MethodPost, path("campaigns"), nil, r, &out)
	return out, err
}

// Campaign returns a campaign with its progress.
func (c *Client) Campaign(ctx context.Context, id int64) (wire.Campaign, error) {
	var out wire.Campaign
	err := c.do(ctx, http.MethodGet, path("campaigns", strconv.FormatInt(id, 10)), nil, nil, &out)
	return out, err
}

// Campaigns lists campaigns, newest first.
func (c *Client) Campaigns(ctx context.Context) ([]wire.Campaign, error) {
	var out wire.CampaignList
	err := c.do(ctx, http.MethodGet, path("campaigns"), nil, nil, &out)
	return out.Campaigns, err
}

// Regenerations lists the Macs whose key an agent must regenerate (all,
// or the one device named).
func (c *Client) Regenerations(ctx context.Context, device string) ([]wire.Regeneration, error) {
	v := url.Values{}
	if device != "" {
		v.Set("device", device)
	}
	var out wire.RegenerationList
	err := c.do(ctx, http.MethodGet, path("key-regenerations"), v, nil, &out)
	return out.Devices, err
}

func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponse)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}
