"""Shipped migrations are history: a database that applied one refuses to start if its file
changes, so a file's content is pinned here from the commit that added it."""

from __future__ import annotations

from taskforge.adapters.postgres.migrations import load_migrations

SHIPPED = {
    "0001_jobs.sql": "453ba781be5d51782f6c8850a126023400289062de2c0d70925b2e98080fde5e",
    "0002_dead_letters.sql": "fc0c3196a124f3cbf5322d4105a1bf89d0ea341f799f8ab935474361b1a5931d",
    "0003_job_state_machine.sql": (
        "a154ac95ba1857b5aa5821937d3c8b57c90761581e4f6da60a2d99e66c513820"
    ),
    "0004_queue_churn_autovacuum.sql": (
        "53298a776c0e0ae8349a1b4be3517f4244a8e57a1da42511a24951fa79a2cfaf"
    ),
    "0005_job_input_type.sql": "81be7d64b37e79dca0d44947b92c23c3f1042a11d2fea7f49a28382e127b8749",
    "0006_job_timeout_and_errors.sql": (
        "4c70efb7eca82a6f702aff3b2e383ce155f4e1d514f32328c75f9b5bc9029fe4"
    ),
    "0007_job_results.sql": "079902367f5bff2733b4dc88e3f4ec1e117fa2137bddd108b67eaa66cf3d9b95",
    "0008_queues_and_unique_jobs.sql": (
        "eacd5d89661c8e42e3ad98701f7edcab9e37a86a19e19b072cb240efd3735864"
    ),
    "0009_schedules.sql": "e16aa1b867dee408d06c60186aa2f074dc2189b0758c30f89e28ed12e475f316",
    "0010_job_priority.sql": "ffaf41a4bd2d15fb743b99cf0b74ef4abc87160ac565966df1e5fbde31c09e78",
    "0011_workers_snoozes_and_hand_backs.sql": (
        "747a1777f17ae40c7aa35f3a733b9460e5d5be0d54018a05f0c2de1609004ac9"
    ),
    "0012_dead_letter_groups.sql": (
        "17e3736a36e0f75d76552a576b2cd35dd3b7974461d14219ce2674cd1369913a"
    ),
    "0013_job_counts_and_pruning_index.sql": (
        "e849c3c60872726a74f094fedbe76845041e33f39c090a3288f65bb3df6d7c4d"
    ),
    "0014_schedule_priority.sql": (
        "ef9bbf9fb111d9375522dc8e8d00b46ca65fdab7de06a289b368cd11356570ac"
    ),
    "0015_fewer_list_indexes.sql": (
        "765bf4ac3edec3b11dd81bc001704055f741969e9cff7f0cb424bd229d08ec46"
    ),
    "0016_notify_unpublished_jobs.sql": (
        "09b355fddb1bc0ddec634db01e43bd53055fe3688fbd9dc4aa056676a04e41c8"
    ),
    "0017_leaner_job_indexes.sql": (
        "44a25413796f93a6aaca3a932e728a96321af93498894931c1a1f8f9b58a9de8"
    ),
    "0018_count_one_inserted_job_as_it_is.sql": (
        "7e8588ed763e56676774d0b096d0dde620016c2ab0c866fd907fd777fde4778b"
    ),
    "0019_prune_both_states_by_finish.sql": (
        "5b2e961eb7060406eb1bda9e502720d0bb16c22c6736e56594564db87eecb416"
    ),
}
"""A new migration is added here with its checksum; an existing entry never changes."""


def test_shipped_migrations_are_unchanged_and_every_file_is_pinned() -> None:
    found = {migration.file_name: migration.checksum for migration in load_migrations()}

    assert found == SHIPPED
