{#
    Partition-aware incremental: a run reads only the window [var('min_date'), var('max_date')) of
    stg_events and replaces exactly that window here (pre-hook delete, then insert, in one transaction),
    so re-running a day is idempotent. With no vars it covers every date.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_partition_window('activity_date') }}"
    )
}}

with

events as (

    select * from {{ ref('stg_events') }}
    where {{ partition_window_filter('partition_date') }}

),

daily_activity as (

    select
        user_id,
        -- The day is the partition's: the delete above and this insert then cover the same rows by
        -- construction (the contract also keeps event_at within its partition day).
        partition_date as activity_date,
        count(*) as event_count,
        count(*) filter (where event_type = 'purchase') as purchase_count,
        coalesce(sum(amount), 0) as amount_sum,
        count(distinct category) as distinct_categories,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at

    from events
    group by
        user_id,
        partition_date

),

final as (

    select
        user_id,
        activity_date,
        cast(event_count as bigint) as event_count,
        cast(purchase_count as bigint) as purchase_count,
        cast(amount_sum as double) as amount_sum,
        cast(distinct_categories as bigint) as distinct_categories,
        first_event_at,
        last_event_at

    from daily_activity

)

select * from final
