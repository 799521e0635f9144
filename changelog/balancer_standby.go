package changelog

import (
	"cmp"
	"slices"
)

// promoteStandbys hands each orphaned partition (one no member claims to
// own) to one of its previous standbys, keeping the number of orphans each
// member receives as the engine chose it: orphans move nothing that is
// owned, so the engine's balance and stickiness hold. It reports whether it
// changed an owner.
func promoteStandbys(owner, prevOwner []int, prevStandby [][]int) bool {
	quota := make(map[int]int)
	var orphans []int
	for p, o := range owner {
		if o >= 0 && prevOwner[p] < 0 {
			orphans = append(orphans, p)
			quota[o]++
		}
	}
	if len(quota) < 2 {
		return false // one receiver (or none): nothing to choose
	}
	next := make(map[int]int, len(orphans))
	take := func(p, m int) bool {
		if quota[m] == 0 {
			return false
		}
		quota[m]--
		next[p] = m
		return true
	}
	for _, p := range orphans { // to a standby that can take it
		for _, m := range prevStandby[p] {
			if take(p, m) {
				break
			}
		}
	}
	for _, p := range orphans { // else where the engine put it, while it has room
		if _, done := next[p]; !done {
			take(p, owner[p])
		}
	}
	receivers := make([]int, 0, len(quota))
	for m := range quota {
		receivers = append(receivers, m)
	}
	slices.Sort(receivers)
	for _, p := range orphans { // else to the first receiver with room left
		if _, done := next[p]; !done {
			for _, m := range receivers {
				if take(p, m) {
					break
				}
			}
		}
	}
	changed := false
	for p, m := range next {
		if owner[p] != m {
			owner[p], changed = m, true
		}
	}
	return changed
}

// assignStandbys picks, for every partition, min(n, members-1) standbys
// among cands other than its owner. Each member gets either floor or ceil of
// the average number of standbys (the extra ones go to the members that own
// the fewest partitions). Standbys stay where they were when they can (then
// a partition's previous owner is preferred: its copy is warm), new ones go
// to the members with the most room, and a last pass moves standbys from
// members over their share to members under it.
func assignStandbys(n int, cands, owner, prevOwner []int, prevStandby [][]int, owned []int) [][]int {
	np := len(owner)
	sb := make([][]int, np)
	k := min(n, len(cands)-1)
	if np == 0 || k <= 0 {
		return sb
	}
	nm := len(owned)
	isCand := make([]bool, nm)
	for _, m := range cands {
		isCand[m] = true
	}
	total := np * k
	byOwned := slices.Clone(cands)
	slices.SortStableFunc(byOwned, func(a, b int) int { return cmp.Compare(owned[a], owned[b]) })
	share := make([]int, nm)
	for i, m := range byOwned {
		share[m] = total / len(cands)
		if i < total%len(cands) {
			share[m]++
		}
	}
	load := make([]int, nm)
	ok := func(p, m int) bool { return m >= 0 && isCand[m] && m != owner[p] && !slices.Contains(sb[p], m) }
	add := func(p, m int) { sb[p] = append(sb[p], m); load[m]++ }

	// 1. Stay where they were, then the previous owner, within the shares.
	for p := range np {
		for _, m := range append(slices.Clone(prevStandby[p]), prevOwner[p]) {
			if len(sb[p]) < k && ok(p, m) && load[m] < share[m] {
				add(p, m)
			}
		}
	}
	// 2. Fill, taking the owners' partitions in turn so that no member's
	// room is used up on one owner's partitions.
	for _, p := range interleaveByOwner(owner) {
		for len(sb[p]) < k {
			best := -1
			for _, m := range cands {
				if !ok(p, m) {
					continue
				}
				if best < 0 || load[m]-share[m] < load[best]-share[best] {
					best = m
				}
			}
			add(p, best) // there is one: k < len(cands)
		}
	}
	// 3. Move standbys from members over their share to members under it.
	for moved := true; moved; {
		moved = false
		for _, hi := range cands {
			for _, lo := range cands {
				for p := 0; p < np && load[hi] > share[hi] && load[lo] < share[lo]; p++ {
					if i := slices.Index(sb[p], hi); i >= 0 && ok(p, lo) {
						sb[p][i] = lo
						load[hi]--
						load[lo]++
						moved = true
					}
				}
			}
		}
	}
	for p := range sb {
		slices.Sort(sb[p])
	}
	return sb
}

// interleaveByOwner orders the partitions as the first of each owner's,
// then the second of each, and so on.
func interleaveByOwner(owner []int) []int {
	rank := make([]int, len(owner))
	seen := make(map[int]int)
	order := make([]int, len(owner))
	for p, o := range owner {
		rank[p] = seen[o]
		seen[o]++
		order[p] = p
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(rank[a], rank[b]), cmp.Compare(owner[a], owner[b]))
	})
	return order
}
