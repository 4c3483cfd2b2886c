with

source as (

    select * from {{ source('validated', 'validated_events') }}

),

renamed as (

    select
        -- ids
        event_id,
        user_id,

        -- properties
        event_type,
        category,
        country,
        cast(amount as double) as amount,

        -- time
        event_time as event_at,
        partition_date,

        -- lineage
        _source as source_name,
        _source_uri as source_uri,
        _ingested_at as ingested_at

    from source

)

select * from renamed
