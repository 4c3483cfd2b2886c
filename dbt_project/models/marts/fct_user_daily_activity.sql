{#
    Partition-aware incremental: a run reads only the window [var('min_date'), var('max_date')) of the
    feature store's per-user-day partials and replaces exactly that window here (pre-hook delete, then
    insert, in one transaction), so re-running a day is idempotent. With no vars it covers every date.
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

partials as (

    select * from {{ source('features', 'user_daily_aggregates') }}
    where {{ partition_window_filter('activity_date') }}

),

final as (

    select
        user_id,
        activity_date,
        cast(event_id__count as bigint) as event_count,
        cast(event_id__count__event_type_purchase as bigint) as purchase_count,
        cast(amount__sum as decimal(38, 9)) as amount_sum,
        cast(len(category__values) as bigint) as distinct_categories,
        event_time__min as first_event_at,
        event_time__max as last_event_at

    from partials

)

select * from final
