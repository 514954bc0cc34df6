-- analyze: the review queue (rank, within the review budget) and the exemption holding an account
ALTER TABLE account_judgements ADD COLUMN review_rank INTEGER;
ALTER TABLE account_judgements ADD COLUMN within_budget INTEGER;
ALTER TABLE account_judgements ADD COLUMN exemption TEXT;
