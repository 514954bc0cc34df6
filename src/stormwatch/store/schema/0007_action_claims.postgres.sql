-- disrupt: delivery claims (leases) on actions, so concurrent runs never deliver one action twice
ALTER TABLE disrupt_actions ADD COLUMN claimed_by TEXT;
ALTER TABLE disrupt_actions ADD COLUMN lease_until TEXT;
