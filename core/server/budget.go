package server

import (
	"errors"
	"io"
	"sync"
)

// budget bounds the request-body bytes Loom holds at once, in all and per
// tenant, so that large or trickled uploads from one tenant cannot take
// the memory every other tenant's requests need.
type budget struct {
	mu        sync.Mutex
	total     int64 // bytes held by all tenants
	limit     int64
	perTenant int64
	held      map[string]int64
}

var (
	errBodyTenantShare = errors.New("the tenant holds its share of the memory for request bodies")
	errBodyMemory      = errors.New("the memory for request bodies is in use")
)

func newBudget(limit int64, sharePercent int) *budget {
	if limit <= 0 {
		limit = 128 << 20
	}
	if sharePercent <= 0 || sharePercent > 100 {
		sharePercent = 25
	}
	return &budget{limit: limit, perTenant: max(1, limit*int64(sharePercent)/100), held: map[string]int64{}}
}

// take reserves n more bytes for tenant, or reports why it cannot.
func (b *budget) take(tenant string, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.held[tenant]+n > b.perTenant:
		return errBodyTenantShare
	case b.total+n > b.limit:
		return errBodyMemory
	}
	b.held[tenant] += n
	b.total += n
	return nil
}

// give returns n bytes of tenant's.
func (b *budget) give(tenant string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.held[tenant] -= n; b.held[tenant] <= 0 {
		delete(b.held, tenant)
	}
}

// budgetStep is how much a body of unknown length reserves at a time.
const budgetStep = 64 << 10

// budgetedReader reserves budget ahead of what it reads: the whole
// declared length at once, or budgetStep at a time for a chunked body.
// held is what it reserved; the request gives it back when it ends.
type budgetedReader struct {
	r      io.Reader
	b      *budget
	tenant string
	read   int64
	held   int64
}

func (br *budgetedReader) Read(p []byte) (int, error) {
	if br.read+int64(len(p)) > br.held {
		want := max(budgetStep, int64(len(p)))
		if err := br.b.take(br.tenant, want); err != nil {
			return 0, err
		}
		br.held += want
	}
	n, err := br.r.Read(p)
	br.read += int64(n)
	return n, err
}
