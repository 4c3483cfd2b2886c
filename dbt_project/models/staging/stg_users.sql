with

source as (

    select * from {{ source('validated', 'validated_users') }}

),

renamed as (

    select
        -- ids
        user_id,

        -- properties
        email,
        cast(age as bigint) as age,
        country,

        -- time
        signup_time as signup_at,
        partition_date,

        -- lineage
        _source as source_name,
        _source_uri as source_uri,
        _ingested_at as ingested_at

    from source

)

select * from renamed
