package serde

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// reach is how far back one direction of a compatibility rule looks.
type reach int

const (
	reachNone   reach = iota
	reachLatest       // the latest registered version
	reachAll          // every registered version (transitive)
)

// rule is a compatibility level taken apart: backward (the new schema reads
// data written with old ones) and forward (old schemas read data written
// with the new one), each with its reach. Taken apart, two levels combine
// into one that asks for everything either asks for: BACKWARD and FORWARD
// make FULL; BACKWARD_TRANSITIVE and FORWARD make a rule stricter than both
// that no level names (it is written "BACKWARD_TRANSITIVE+FORWARD").
type rule struct {
	backward, forward reach
}

func ruleOf(l Compatibility) (rule, error) {
	switch l {
	case sr.CompatNone:
		return rule{}, nil
	case sr.CompatBackward:
		return rule{backward: reachLatest}, nil
	case sr.CompatBackwardTransitive:
		return rule{backward: reachAll}, nil
	case sr.CompatForward:
		return rule{forward: reachLatest}, nil
	case sr.CompatForwardTransitive:
		return rule{forward: reachAll}, nil
	case sr.CompatFull:
		return rule{backward: reachLatest, forward: reachLatest}, nil
	case sr.CompatFullTransitive:
		return rule{backward: reachAll, forward: reachAll}, nil
	}
	return rule{}, fmt.Errorf("serde: unknown compatibility level %d", int(l))
}

// stricter returns the rule that asks for everything r or o asks for.
func (r rule) stricter(o rule) rule {
	return rule{backward: max(r.backward, o.backward), forward: max(r.forward, o.forward)}
}

func (r rule) String() string {
	for _, l := range []Compatibility{sr.CompatNone, sr.CompatBackward, sr.CompatBackwardTransitive,
		sr.CompatForward, sr.CompatForwardTransitive, sr.CompatFull, sr.CompatFullTransitive} {
		if lr, _ := ruleOf(l); lr == r {
			return l.String()
		}
	}
	// Both directions, with different reaches.
	back := map[reach]string{reachLatest: "BACKWARD", reachAll: "BACKWARD_TRANSITIVE"}
	fwd := map[reach]string{reachLatest: "FORWARD", reachAll: "FORWARD_TRANSITIVE"}
	return back[r.backward] + "+" + fwd[r.forward]
}

// registryLevel returns the compatibility level the registry applies to
// subject: the subject's own, else the global one. ok is false when the
// registry has neither: it answers 404 for both, or another 4xx that says it
// does not serve levels (400, 405, ...). A failure that says nothing about
// the level (no answer, a 5xx, 401, 403, 408, 429) is an error wrapping
// ErrRegistryUnavailable: New does not register a schema it could not check
// under the registry's level.
func registryLevel(ctx context.Context, client *sr.Client, subject string) (level Compatibility, ok bool, err error) {
	for _, s := range []string{subject, sr.GlobalSubject} {
		qctx := ctx
		if s != sr.GlobalSubject {
			qctx = sr.WithParams(ctx, sr.DefaultToGlobal)
		}
		res := client.Compatibility(qctx, s)[0]
		switch {
		case res.Err == nil:
			return res.Level, true, nil
		case !hasNoLevel(res.Err):
			what := fmt.Sprintf("subject %q", subject)
			if s == sr.GlobalSubject {
				what = "the registry (global)"
			}
			return 0, false, fmt.Errorf("%w: read the compatibility level of %s: %w", ErrRegistryUnavailable, what, res.Err)
		}
	}
	return 0, false, nil
}

// checkCompatible checks reader against the versions of subject that r
// reaches, in the directions r asks for.
func checkCompatible(ctx context.Context, client *sr.Client, subject string, reader avro.Schema, r rule) error {
	if r == (rule{}) {
		return nil
	}
	versions := []int{-1} // the latest
	if r.backward == reachAll || r.forward == reachAll {
		vs, err := client.SubjectVersions(ctx, subject)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("serde: list versions of subject %q: %w", subject, err)
		}
		versions = slices.Sorted(slices.Values(vs))
	}
	sc := avro.NewSchemaCompatibility()
	for i, v := range versions {
		latest := i == len(versions)-1
		ss, err := client.SchemaByVersion(ctx, subject, v)
		if isNotFound(err) {
			continue // nothing registered yet
		}
		if err != nil {
			return fmt.Errorf("serde: fetch version %d of subject %q: %w", v, subject, err)
		}
		old, err := avro.Parse(ss.Schema.Schema)
		if err != nil {
			return &SchemaError{Subject: subject, ID: ss.ID, Err: ErrUnknownSchema, Cause: err}
		}
		if r.backward == reachAll || r.backward == reachLatest && latest {
			if err := sc.Compatible(reader, old); err != nil {
				return fmt.Errorf("%w: subject %q version %d: the new schema cannot read data written with it (%s): %s",
					ErrIncompatibleSchema, subject, ss.Version, r, explain(reader, old, fmt.Sprintf("version %d", ss.Version), err))
			}
		}
		if r.forward == reachAll || r.forward == reachLatest && latest {
			if err := sc.Compatible(old, reader); err != nil {
				return fmt.Errorf("%w: subject %q version %d: it cannot read data written with the new schema (%s): %s",
					ErrIncompatibleSchema, subject, ss.Version, r, explain(old, reader, "the new schema", err))
			}
		}
	}
	return nil
}

func isNotFound(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// hasNoLevel reports whether err is the registry's answer that it has no
// compatibility level to give, rather than a failure to ask it.
func hasNoLevel(err error) bool {
	var re *sr.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	switch re.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return re.StatusCode >= 400 && re.StatusCode < 500
}

func isConflict(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusConflict
}

// explain says why reader cannot read data written with writer, naming the
// reader field where they part: "reader field age has no default and writer
// schema 3 lacks it". what names the writer. err is hamba/avro's verdict,
// used when no field can be named.
func explain(reader, writer avro.Schema, what string, err error) string {
	if msg := explainAt(reader, writer, "", what, map[string]bool{}); msg != "" {
		return msg
	}
	return fmt.Sprintf("%v (reader schema against %s)", err, what)
}

func explainAt(reader, writer avro.Schema, path, what string, seen map[string]bool) string {
	reader, writer = deref(reader), deref(writer)
	sc := avro.NewSchemaCompatibility()
	switch r := reader.(type) {
	case *avro.RecordSchema:
		w, ok := writer.(*avro.RecordSchema)
		if !ok {
			return ""
		}
		if seen[r.FullName()+" "+w.FullName()] {
			return ""
		}
		seen[r.FullName()+" "+w.FullName()] = true
		for _, rf := range r.Fields() {
			fpath := rf.Name()
			if path != "" {
				fpath = path + "." + rf.Name()
			}
			wf := writerField(w, rf)
			if wf == nil {
				if rf.HasDefault() {
					continue
				}
				return fmt.Sprintf("reader field %s has no default and %s lacks it", fpath, what)
			}
			err := sc.Compatible(rf.Type(), wf.Type())
			if err == nil {
				continue
			}
			if msg := explainAt(rf.Type(), wf.Type(), fpath, what, seen); msg != "" {
				return msg
			}
			return fmt.Sprintf("reader field %s is %s and %s has %s: %v", fpath, avroName(rf.Type()), what, avroName(wf.Type()), err)
		}
	case *avro.ArraySchema:
		if w, ok := writer.(*avro.ArraySchema); ok {
			return explainAt(r.Items(), w.Items(), path+"[]", what, seen)
		}
	case *avro.MapSchema:
		if w, ok := writer.(*avro.MapSchema); ok {
			return explainAt(r.Values(), w.Values(), path+"[]", what, seen)
		}
	}
	return ""
}

// writerField is the field of w that reader field rf reads: the one of its
// name, or of one of its aliases.
func writerField(w *avro.RecordSchema, rf *avro.Field) *avro.Field {
	for _, wf := range w.Fields() {
		if wf.Name() == rf.Name() || slices.Contains(rf.Aliases(), wf.Name()) {
			return wf
		}
	}
	return nil
}
