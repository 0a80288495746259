package agent

import (
	"github.com/otelbee/otelbee/collectors/budget"
	"github.com/otelbee/otelbee/collectors/series"
)

// seriesBudget is the collectors' series.Budget for series.budget (nil
// interface when there is none, so that the tables skip it).
func seriesBudget(max int) series.Budget {
	if b := budget.New(max); b != nil {
		return b
	}
	return nil
}

// budgetOf is the budget behind a collectors.Deps.SeriesBudget, for the
// self-metrics.
func budgetOf(b series.Budget) *budget.Budget {
	bb, _ := b.(*budget.Budget)
	return bb
}
