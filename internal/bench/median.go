package bench

import (
	"reflect"
	"slices"
)

// Median combines several runs of one workload into one report: each
// figure is the median of that figure over the runs (so the figures of a
// row may come from different runs, as a benchmark table's medians do).
// Errors take the median count of each kind.
func Median(runs []*Report) *Report {
	if len(runs) == 0 {
		return nil
	}
	out := *runs[0]
	v := reflect.ValueOf(&out).Elem()
	for i := range v.NumField() {
		field := func(r *Report) reflect.Value { return reflect.ValueOf(r).Elem().Field(i) }
		switch f := v.Field(i); f.Kind() {
		case reflect.Float64:
			f.SetFloat(median(runs, func(r *Report) float64 { return field(r).Float() }))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(median(runs, func(r *Report) float64 { return float64(field(r).Int()) })))
		case reflect.Uint64:
			f.SetUint(uint64(median(runs, func(r *Report) float64 { return float64(field(r).Uint()) })))
		}
	}
	out.Runs, out.Each = len(runs), runs
	out.Errors = map[string]uint64{}
	for _, r := range runs {
		for k := range r.Errors {
			out.Errors[k] = uint64(median(runs, func(r *Report) float64 { return float64(r.Errors[k]) }))
		}
	}
	for k, n := range out.Errors {
		if n == 0 {
			delete(out.Errors, k)
		}
	}
	return &out
}

// median is the median of fn over the runs (the mean of the middle two
// for an even count).
func median(runs []*Report, fn func(*Report) float64) float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = fn(r)
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
