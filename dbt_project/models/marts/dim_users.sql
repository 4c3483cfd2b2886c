with

profiles as (

    select * from {{ ref('stg_users') }}

),

daily_activity as (

    select * from {{ ref('fct_user_daily_activity') }}

),

latest_profiles as (

    -- The latest landing day wins; ties go to the latest signup_at, then the greatest email,
    -- so the pick never depends on row order.
    select *
    from profiles
    qualify row_number() over (
        partition by user_id
        order by
            partition_date desc,
            signup_at desc,
            email desc
    ) = 1

),

lifetime_activity as (

    select
        user_id,
        min(activity_date) as first_activity_date,
        max(activity_date) as last_activity_date,
        count(*) as active_days,
        sum(event_count) as total_events,
        sum(purchase_count) as total_purchases,
        sum(amount_sum) as total_amount

    from daily_activity
    group by user_id

),

final as (

    -- Every user seen anywhere: with a profile, with events, or both. Profile fields are null for users
    -- with events but no profile (has_profile = false); totals are 0 for users with no events.
    select
        coalesce(latest_profiles.user_id, lifetime_activity.user_id) as user_id,
        latest_profiles.user_id is not null as has_profile,
        latest_profiles.email,
        latest_profiles.age,
        latest_profiles.country,
        latest_profiles.signup_at,
        latest_profiles.partition_date as profile_date,
        lifetime_activity.first_activity_date,
        lifetime_activity.last_activity_date,
        cast(coalesce(lifetime_activity.active_days, 0) as bigint) as active_days,
        cast(coalesce(lifetime_activity.total_events, 0) as bigint) as total_events,
        cast(coalesce(lifetime_activity.total_purchases, 0) as bigint) as total_purchases,
        cast(coalesce(lifetime_activity.total_amount, 0) as decimal(38, 9)) as total_amount

    from latest_profiles
    full outer join lifetime_activity
        on latest_profiles.user_id = lifetime_activity.user_id

)

select * from final
