"""Where play logs come from: the seeded synthetic generator and readers of real formats (HetRec)."""
